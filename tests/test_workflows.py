"""The GitHub workflows do what the README says: CI runs ``bash .ci/run`` on a bare Debian, and
the book is built with warnings as errors and its folder published on GitHub Pages."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
PAGES_PERMISSIONS = {"pages": "write", "id-token": "write", "contents": "read"}


def workflows() -> dict[str, dict[str, Any]]:
    found = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in WORKFLOWS.glob("*.y*ml")}
    assert found, f"no workflow in {WORKFLOWS}"
    return found


def triggers(workflow: dict[Any, Any]) -> Any:
    """The ``on:`` key, which YAML 1.1 (PyYAML) reads as the boolean True."""
    return workflow.get("on", workflow.get(True))


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(job name, job, step) for every step of every job."""
    return [(name, job, step) for name, job in workflow["jobs"].items() for step in job.get("steps", [])]


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def image(job: dict[str, Any]) -> str:
    container = job.get("container")
    return container.get("image", "") if isinstance(container, dict) else str(container or "")


def test_ci_runs_the_test_command_in_debian_bookworm_on_push_and_pull_request() -> None:
    found = [
        (workflow, job, step)
        for workflow in workflows().values()
        for _, job, step in steps(workflow)
        if "bash .ci/run" in str(step.get("run", ""))
    ]
    assert len(found) == 1, "exactly one step runs `bash .ci/run`"
    workflow, job, step = found[0]
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert image(job) == "debian:bookworm"
    job_steps = job["steps"]
    setup = " ".join(str(s.get("run", "")) for s in job_steps[: job_steps.index(step)])
    for package in ("python3", "python3-venv", "git"):
        assert package in setup.split(), f"{package} is not installed before .ci/run"
    checkout = next(i for i, s in enumerate(job_steps) if uses(s, "actions/checkout"))
    installs_git = next(i for i, s in enumerate(job_steps) if "git" in str(s.get("run", "")).split())
    assert installs_git < checkout < job_steps.index(step), "git must be there before the checkout (a real clone)"


def sphinx_output(command: str) -> str | None:
    """The output folder of a ``python -m sphinx`` command, or None for another command."""
    words = shlex.split(command)
    if "sphinx" not in words or "-m" not in words:
        return None
    return words[-1]


def test_the_book_is_built_strictly_and_its_folder_published_on_pages() -> None:
    for workflow in workflows().values():
        deploys = [(name, job) for name, job, step in steps(workflow) if uses(step, "actions/deploy-pages")]
        if deploys:
            break
    else:
        raise AssertionError("no workflow deploys to GitHub Pages")
    assert len(deploys) == 1
    name, deploy = deploys[0]
    permissions = deploy.get("permissions", workflow.get("permissions", {}))
    assert all(permissions.get(key) == value for key, value in PAGES_PERMISSIONS.items()), permissions
    assert deploy["environment"]["name"] == "github-pages"
    all_steps = steps(workflow)
    builds = [(job, step) for _, job, step in all_steps if sphinx_output(str(step.get("run", "")))]
    assert len(builds) == 1, "one step builds the book"
    build_job, build = builds[0]
    command = shlex.split(build["run"])
    assert {"-W", "--keep-going", "-n"} <= set(command) and command[command.index("-c") + 1] == "book"
    out = sphinx_output(build["run"])
    uploads = [step for _, job, step in all_steps if uses(step, "actions/upload-pages-artifact")]
    assert [step["with"]["path"] for step in uploads] == [out], "the upload is not the folder the build writes"
    assert any(uses(step, "actions/configure-pages") for step in build_job["steps"])
    build_name = next(n for n, job in workflow["jobs"].items() if job is build_job)
    needs = deploy.get("needs", [])
    assert build_name in ([needs] if isinstance(needs, str) else needs), f"{name} does not wait for the build"
    assert "COURSE_REPOSITORY" in build.get("env", {}), "the book would link to the placeholder repository"


def test_the_readme_builds_the_book_with_the_workflows_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for workflow in workflows().values():
        for _, _, step in steps(workflow):
            if sphinx_output(str(step.get("run", ""))):
                command = step["run"].strip().removeprefix(".venv/bin/")
                assert command in readme, f"the README does not show the book's build: {command}"
