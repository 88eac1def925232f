import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from transferlab.report.figures import drawing, save_png  # noqa: E402


def _figure(i: int):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [i, i + 1, i * i], marker="o", label=f"line {i}")
    ax.set_title(f"figure {i}")
    ax.legend()
    return fig


def test_forked_figures_are_the_bytes_of_a_plain_save(tmp_path):
    for i in range(5):
        fig = _figure(i)
        save_png(fig, tmp_path / "plain" / f"{i}.png", tight_layout={}, dpi=80,
                 bbox_inches="tight")
        plt.close(fig)
    with drawing():
        for i in range(5):
            fig = _figure(i)
            save_png(fig, tmp_path / "forked" / f"{i}.png", tight_layout={}, dpi=80,
                     bbox_inches="tight")
            plt.close(fig)  # the caller may close it at once
    for i in range(5):
        assert (tmp_path / "forked" / f"{i}.png").read_bytes() == \
            (tmp_path / "plain" / f"{i}.png").read_bytes()
    # Nothing left beside them (atomic writes), no process left behind.
    assert sorted(p.name for p in (tmp_path / "forked").iterdir()) == \
        [f"{i}.png" for i in range(5)]
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_a_failed_figure_fails_the_block_after_the_others_are_written(tmp_path, capfd):
    good, bad = _figure(1), _figure(2)

    def broken(*args, **kwargs):
        raise ValueError("cannot draw this")

    bad.savefig = broken
    with pytest.raises(RuntimeError, match="bad.png"), drawing():
        save_png(bad, tmp_path / "bad.png")
        save_png(good, tmp_path / "good.png")
    assert (tmp_path / "good.png").exists() and not (tmp_path / "bad.png").exists()
    assert "cannot draw this" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png"]
    plt.close("all")


def test_an_error_in_the_block_waits_for_the_figures_and_propagates(tmp_path):
    fig = _figure(3)
    with pytest.raises(KeyError), drawing():
        save_png(fig, tmp_path / "a.png")
        raise KeyError("later")
    assert (tmp_path / "a.png").exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    plt.close("all")
