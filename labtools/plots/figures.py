"""What every figure of the course goes through before a cell shows it."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def finish(fig: Figure) -> Figure:
    """Lay ``fig`` out and take it out of pyplot's registry, then hand it back.

    A cell that ends with the returned figure displays it once; left in pyplot's registry,
    the inline backend would show it a second time at the end of the cell (lessons used to
    end plot calls with ``;`` to hide that).
    """
    fig.tight_layout()
    plt.close(fig)
    return fig
