"""``closeloop alerts test``: a test notification to each configured channel."""

from __future__ import annotations

import typer

from closeloop.cli import ConfigOption, _hub, alerts_app, console, err


@alerts_app.command("test")
def alerts_test(config: ConfigOption = None) -> None:
    """Send a test notification to every channel under ``alerts.channels``; exits 1 when
    one did not accept it (each channel's answer is printed)."""
    hub = _hub(config)
    alerter = hub.alerter()
    try:
        results = alerter.test()
    finally:
        alerter.close()
        hub.close()
    if not results:
        err.print("no channels under alerts.channels: nothing to test")
        raise typer.Exit(1)
    for name, problem in results.items():
        if problem is None:
            console.print(f"{name}: sent ({alerter.senders[name].describe()})")
        else:
            err.print(f"[red]{name}: failed: {problem}[/red]")
    if any(problem is not None for problem in results.values()):
        raise typer.Exit(1)
