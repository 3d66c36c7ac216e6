"""The README's first command, in a short mode: the whole loop on its own embedded stack."""

from __future__ import annotations

import io

from rich.console import Console

from learnloop.demo import BAD_EVERY, run_demo
from learnloop.settings import load_settings


def test_short_demo_accounts_for_every_message_and_every_model_learns_every_example():
    out = io.StringIO()
    progress = run_demo(load_settings(), users=200, items=50, impressions=2 * BAD_EVERY * 2,
                        consumers=1, console=Console(file=out, width=120))
    assert progress.malformed == 4
    assert progress.rejected == progress.malformed
    assert progress.accounted == progress.published + progress.malformed
    assert progress.exposures == 2 * BAD_EVERY * 2
    assert 0 < progress.positives < progress.examples
    assert progress.learned == progress.examples
    summary = out.getvalue()
    assert f"{progress.examples:,} labeled examples" in summary
    assert "item_ctr (baseline)" in summary and "logreg" in summary
    assert "Top items of u0" in summary
