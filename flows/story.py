"""The migration's story as artifacts of the current flow run: what every run publishes at its end."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext

from shiftover.control.store import ControlStore
from shiftover.spec import MigrationSpec
from shiftover.story import artifact_key, render_picture, render_story, routing_history, validation_failures


def publish_story(store: ControlStore, spec: MigrationSpec) -> None:
    """The story as a markdown artifact of the current flow run (a no-op outside one)."""
    if FlowRunContext.get() is None:
        return
    key = artifact_key(spec.name, "story")
    failures = validation_failures(store, spec.name)
    story = render_story(store, spec)
    if failures:
        create_table_artifact(
            key=f"{key}-validation-failures",
            table=failures,
            description=f"rows the diff found different for {spec.name} (latest {len(failures)})",
        )
        story += f"\n\n**Validation failures:** {len(failures)} latest in the artifact `{key}-validation-failures`."
    routing = routing_history(store, spec.name)
    if routing:
        create_table_artifact(
            key=f"{key}-routing",
            table=routing,
            description=f"routing of {spec.name} after every flag change: writes, % of reads on the new store",
        )
        now = routing[-1]
        story += (
            f"\n\n**Routing now:** writes `{now['writes']}`, {now['reads_new_percent']:g}% of reads on the new "
            f"store; every change in the artifact `{key}-routing`."
        )
    story = story.replace("## Timeline", "## Timeline\n\n" + render_picture(store, spec), 1)
    create_markdown_artifact(key=key, markdown=story, description=f"story of {spec.name}")


def publish_story_quietly(store: ControlStore, spec: MigrationSpec) -> None:
    """``publish_story``; a failure to publish is logged, never raised over the run's own outcome."""
    try:
        if store.has_migration(spec.name):  # a first run refused before its first stage removed it
            publish_story(store, spec)
    except Exception as exc:  # the run's own outcome matters more than its story
        get_run_logger().warning("could not publish the story of %s: %s", spec.name, exc)
