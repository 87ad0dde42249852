import io

from goodtransfer.progress import Progress, duration


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration_reads_as_hours_minutes_or_seconds():
    assert duration(12.4) == "12s"
    assert duration(245) == "4m05s"
    assert duration(3 * 3600 + 125) == "3h02m"


def test_log_gets_one_line_every_n_steps_and_at_the_end():
    stream = io.StringIO()
    progress = Progress("pretrain r", 7, items_per_step=32, unit="img", every=3, stream=stream)
    for _ in range(7):
        progress.update(loss=1.5)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["3/7", "6/7", "7/7"]
    assert all("img/s" in line and "ETA" in line and "loss 1.5" in line for line in lines)


def test_resumed_job_counts_only_its_own_steps_in_the_rate():
    progress = Progress("voc r", 100, done=90, items_per_step=2, stream=io.StringIO())
    progress._began -= 10.0  # ten seconds for the five steps below
    for _ in range(5):
        progress.update()
    assert abs(progress.rate() - 1.0) < 0.05  # 5 steps x 2 images / 10 s, not 95 steps
    assert abs(progress.eta() - 10.0) < 0.6


def test_terminal_gets_a_bar_redrawn_in_place_ending_with_a_newline():
    stream = FakeTerminal()
    progress = Progress("pretrain r", 4, stream=stream)
    for _ in range(4):
        progress.update(loss=0.25)
    text = stream.getvalue()
    assert text.startswith("\r|") and text.endswith("\n")
    assert "|" + "#" * 24 + "|" in text and "4/4" in text


def test_disabled_progress_writes_nothing():
    stream = FakeTerminal()
    progress = Progress("pretrain r", 2, every=1, stream=stream, enabled=False)
    progress.update()
    progress.update()
    assert stream.getvalue() == ""
