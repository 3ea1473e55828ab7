"""benchmarks/ct_protocol.py runs at tiny size on the CPU on a real CT block and writes JSON and PNG."""

import json

import numpy as np

from benchmarks import ct_protocol


def test_ct_protocol_small(tmp_path):
    ct_protocol.main(["--small", "--cases", "chest1", "--views", "25", "--noise", "none",
                      "--methods", "fdk,sart,naf", "--out-dir", str(tmp_path)])
    (path,) = tmp_path.glob("ct_protocol_small_*.json")
    rep = json.loads(path.read_text())
    rows = {r["method"]: r for r in rep["rows"]}
    assert set(rows) == {"fdk", "sart", "naf"} and not any("error" in r for r in rows.values())
    for r in rows.values():
        assert np.isfinite(r["psnr3d"]) and 0 < r["ssim3d"] <= 1 and r["seconds"] > 0
    # SART (3 iterations at this size) already beats FDK's streaks on 25 views; it reports its best iteration.
    assert rows["sart"]["psnr3d"] > rows["fdk"]["psnr3d"]
    assert rows["sart"]["best_psnr3d"] == max(rows["sart"]["psnr3d_per_iter"])
    assert rep["summary_held_out"]["sart|25|none"]["n"] == 1  # chest1 is held out (tuning: phantom, chest0)
    assert path.with_suffix(".png").stat().st_size > 0


def test_blocks_do_not_overlap_and_truth_is_the_fine_mean():
    fine = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    np.testing.assert_allclose(ct_protocol._mean2(fine)[1, 2, 3], fine[2:4, 4:6, 6:8].mean())
    assert len(set(ct_protocol.BLOCKS.values())) == len(ct_protocol.BLOCKS)
