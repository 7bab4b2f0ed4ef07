"""Solutions of the lessons' exercises, one module per lesson, each checked by the tests."""
