import io

from transferlab.progress import progress_bar


def test_bar_is_off_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("TRANSFERLAB_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a tty: tqdm's disable=None
    with progress_bar(range(3)) as bar:
        assert bar.disable
        assert list(bar) == [0, 1, 2]


def test_bar_is_on_for_a_terminal_unless_disabled(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TRANSFERLAB_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", Terminal())
    with progress_bar(total=2) as bar:
        assert not bar.disable
    with progress_bar(total=2, disable=True) as bar:
        assert bar.disable
    monkeypatch.setenv("TRANSFERLAB_NO_PROGRESS", "1")
    with progress_bar(total=2) as bar:
        assert bar.disable
