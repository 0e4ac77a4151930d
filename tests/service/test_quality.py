"""Frame quality on the real service: frames that do not belong are left out of the master."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, wait_until, write_config
from biaswatch.testing.service import catalog_rows, running_service

# A night far ahead, so no clock-driven rule (quiet period, night end) closes the
# set: it completes by count, after all frames are in.
NIGHT = "2030-01-14"


def test_light_leak_flat_and_settling_frames_are_left_out_with_reasons(tmp_path: Path) -> None:
    """Three bad frames among six good ones are rejected with their reasons; the master has six."""
    config = write_config(tmp_path, expected_frames=9, settle_seconds=0.2)
    incoming = tmp_path / "incoming" / "cryo"
    bad = {
        "leak.fits": {"image_offset": 40.0},  # stray light on the image, not the overscan
        "flat.fits": {"image_offset": 20000.0, "image_noise": 140.0},  # a flat called BIAS
        "settling.fits": {"image_offset": 12.0},  # first frame after a readout-mode change
    }
    with running_service(config) as service:
        written = [write_cryo_raw(incoming / f"good{i}.fits", i) for i in range(6)]
        for seed, (name, change) in enumerate(bad.items(), start=10):
            written.append(write_cryo_raw(incoming / name, seed, **change))
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
        (published,) = service.wait_event("master.published", timeout=120)
        preview = Path(published["path"]).with_suffix(".png")
        wait_until(preview.exists, 60, "the preview, drawn after publication")
        outliers = service.events("frame.outlier")
        assert service.stop()[0] == 0
    assert sorted(Path(e["file"]).name for e in outliers) == sorted(bad)
    rows = {Path(r["path"]).name: r for r in catalog_rows(config, "SELECT * FROM frames")}
    for name in bad:
        assert rows[name]["status"] == "rejected"
        assert "robust sigma from the set's" in rows[name]["reason"]
    assert rows["leak.fits"]["reason"].startswith("level 40.")
    assert {rows[f"good{i}.fits"]["status"] for i in range(6)} == {"combined"}
    header = fits.getheader(published["path"])
    assert header["NCOMBINE"] == 6
    assert sorted(v for k, v in header.items() if k.startswith("IMCMB")) == [
        f"good{i}.fits" for i in range(6)
    ]
    assert published["night"] == NIGHT
    # Read noise 5 ADU per frame, plus the per-row overscan median each calibration
    # subtracts (8 pixels: ~1.25 x 5 / sqrt(8) = 2.2 ADU): about 5.5 from input pairs;
    # the master of 6 frames has about 5.5 / sqrt(6) = 2.2.
    assert 4.5 < header["QC_RON"] < 6.5
    assert header["QC_RONEX"] == pytest.approx(header["QC_RON"] / 6**0.5, rel=1e-3)
    assert header["QC_NOISE"] < header["QC_RON"] / 2
    assert published["read_noise"] == pytest.approx(header["QC_RON"], abs=1e-3)
    (stored,) = catalog_rows(config, "SELECT qc FROM masters")
    assert json.loads(stored["qc"])["read_noise"] == pytest.approx(header["QC_RON"], abs=1e-3)
    png = preview.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1200, 900)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written}
    assert after == before  # raw files untouched


def biaswatch(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a biaswatch command against the config, as an operator would."""
    return run_cli(*args, "--config", config)


def test_drifted_master_is_rejected_latest_stays_and_a_person_can_overrule(
    tmp_path: Path,
) -> None:
    """A master 30 ADU off four good ones is filed as rejected; latest stays; accept moves it."""
    alert = tmp_path / "alert.json"
    script = f"import sys; open({str(alert)!r}, 'w').write(sys.stdin.read())"
    extra = f"[alerts]\ncommand = {json.dumps([sys.executable, '-c', script])}\n"
    config = write_config(tmp_path, extra, expected_frames=3, settle_seconds=0.2)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        # Four nights of good masters: the baseline (nights 2030-01-10 to -13; 03:00 UTC
        # is the evening before in Chicago).
        for day in range(11, 15):
            for i in range(3):
                date = f"2030-01-{day}T03:00:0{i}"
                write_cryo_raw(incoming / f"n{day}_{i}.fits", day * 10 + i, date_obs=date)
            service.wait_event("master.published", count=day - 10, timeout=120)
        # The fifth night's bias level moved by 30 ADU (a controller change).
        for i in range(3):
            date = f"2030-01-15T03:00:0{i}"
            write_cryo_raw(incoming / f"n15_{i}.fits", 150 + i, image_offset=30.0, date_obs=date)
        (rejected,) = service.wait_event("master.rejected", timeout=120)
        published = service.wait_event("master.published", count=5)
        service.wait_event("alert.sent")
        assert service.stop()[0] == 0
    sent = json.loads(alert.read_text())
    assert (sent["alarm"], sent["path"]) == ("alarm.master_rejected", rejected["path"])
    states = [e["state"] for e in published]
    assert states == ["accepted"] * 4 + ["rejected"]
    moved = re.match(r"level (-?[0-9.]+) ADU is \+[0-9.]+ robust sigma", rejected["reason"])
    assert moved is not None and 28.0 < float(moved.group(1)) < 32.0, rejected["reason"]
    drifted = Path(rejected["path"])
    masters = tmp_path / "masters" / "cryo"
    # Judged before its final name: it lands in the rejected folder under its own name,
    # out of every bias_*.fits glob (night 2030-01-14: 03:00 UTC is the evening before).
    assert drifted.parent == masters / "rejected" / "2030-01-14"
    assert drifted.name.startswith("rejected_cryo_2030-01-14_01_")
    assert published[4]["path"] == str(drifted)
    assert drifted not in set(masters.glob("**/bias_*.fits"))
    assert list((masters / "2030-01-14").glob("*.fits")) == []
    index = json.loads((masters / "index.json").read_text())
    assert [(m["night"], m["state"], m["latest"]) for m in index["masters"]] == [
        *[(f"2030-01-{day}", "accepted", day == 13) for day in range(10, 14)],
        ("2030-01-14", "rejected", False),
    ]
    assert index["masters"][4]["file"] == f"rejected/2030-01-14/{drifted.name}"
    latest = masters / "latest.fits"
    assert latest.resolve() == Path(published[3]["path"]).resolve()
    assert drifted.exists()  # kept on disk, never deleted
    # Downstream asks which master to use for a frame of 2030-01-15 (night -14): the
    # rejected one is never offered; the nearest accepted (night -13) is.
    chosen = biaswatch(config, "masters", "--camera", "cryo", "--for", "2030-01-15T04:00:00")
    assert (chosen.returncode, chosen.stdout.strip()) == (0, published[3]["path"])
    (current,) = json.loads(biaswatch(config, "masters", "--current", "--json").stdout)
    assert current["path"] == published[3]["path"]
    accepted = biaswatch(config, "accept", str(drifted), "--why", "new controller, new level")
    assert accepted.returncode == 0, accepted.stderr
    # Accepted, it moves to its night folder under the accepted name.
    usable = masters / "2030-01-14" / drifted.name.replace("rejected_", "bias_", 1)
    assert accepted.stdout.startswith(f"{usable}: accepted by ")
    assert usable.is_file() and not drifted.exists()
    assert latest.resolve() == usable.resolve()
    index = json.loads((masters / "index.json").read_text())
    assert (index["masters"][4]["path"], index["masters"][4]["state"]) == (str(usable), "accepted")
    prints = {fits.getheader(e["path"])["BWFPRINT"] for e in published[:4]}
    prints.add(fits.getheader(usable)["BWFPRINT"])
    assert len(prints) == 5 and all(len(p) == 16 for p in prints)  # five different makings
    # Three frames per pixel make a MAD from three values: the clip is loose and
    # leaves out a few per cent of them, as ccdproc's would.
    assert 0.0 < fits.getheader(usable)["QC_REJFR"] < 0.2
    listing = json.loads(biaswatch(config, "masters", "--json").stdout)
    (row,) = [m for m in listing if m["path"] == str(usable)]
    assert (row["state"], row["judgement"]) == ("accepted", "new controller, new level")
    assert row["judged_by"]
    chosen = biaswatch(config, "masters", "--camera", "cryo", "--for", "2030-01-15T04:00:00")
    assert chosen.stdout.strip() == str(usable)
    # By its latest.fits link, which now names the drifted master.
    rejected_again = biaswatch(config, "reject", str(latest), "--why", "controller swapped back")
    assert rejected_again.returncode == 0, rejected_again.stderr
    assert latest.resolve() == Path(published[3]["path"]).resolve()
    assert drifted.is_file() and not usable.exists()  # back in the rejected folder
    listing = json.loads(biaswatch(config, "masters", "--json").stdout)
    (row,) = [m for m in listing if m["path"] == str(drifted)]
    assert (row["state"], row["judgement"]) == ("rejected", "controller swapped back")
