"""The progress line every job prints: count, percent, rate and ETA, at most every ``every_s`` seconds."""

from __future__ import annotations

from maskalign.progress import Progress, eta_text


def test_progress_lines_with_eta_on_an_injected_clock() -> None:
    now = [100.0]
    lines: list[str] = []
    p = Progress("finetune", 100, every_s=30, clock=lambda: now[0], out=lines.append)
    for _ in range(10):  # 10 iterations in 20 s: no line yet (under 30 s)
        now[0] += 2.0
        p.update()
    assert lines == []
    for _ in range(10):  # the 15th iteration reaches 30 s: one line; 85 left at 0.5 it/s = 170 s
        now[0] += 2.0
        p.update()
    assert lines == ["[finetune] 15/100 iterations (15.0%), 0.50/s, elapsed 0:00:30, eta 0:02:50"]
    while p.done < 100:
        now[0] += 2.0
        p.update()
    assert lines[-1].startswith("[finetune] 100/100 iterations (100.0%)") and lines[-1].endswith("eta 0:00:00")


def test_eta_text() -> None:
    assert eta_text(0) == "0:00:00" and eta_text(3725) == "1:02:05" and eta_text(2 * 86400 + 61) == "2d 0:01:01"
