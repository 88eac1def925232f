"""Every figure of the report is drawn in place and written atomically by `save_png`."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from transferlab.report.plots import save_png  # noqa: E402


def _figure(i: int):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [i, i + 1, i * i], marker="o", label=f"line {i}")
    ax.set_title(f"figure {i}")
    ax.legend()
    return fig


def test_a_saved_figure_is_the_bytes_of_a_plain_savefig_and_is_closed(tmp_path):
    for i in range(3):
        fig = _figure(i)
        fig.tight_layout()
        fig.savefig(tmp_path / f"plain-{i}.png", format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        fig = _figure(i)
        save_png(fig, tmp_path / "saved" / f"{i}.png", tight_layout={}, dpi=80,
                 bbox_inches="tight")
        assert not plt.fignum_exists(fig.number)
        assert (tmp_path / "saved" / f"{i}.png").read_bytes() == \
            (tmp_path / f"plain-{i}.png").read_bytes()
    # Nothing left beside them: the temporaries were renamed onto the files.
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["0.png", "1.png", "2.png"]


def test_a_failed_figure_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    fig = _figure(1)

    def broken(*args, **kwargs):
        raise ValueError("cannot draw this")

    fig.savefig = broken
    with pytest.raises(ValueError, match="cannot draw this"):
        save_png(fig, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    plt.close("all")
