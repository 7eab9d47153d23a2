"""``tensorfield doctor`` and the one-line messages for missing packages and system libraries."""

from __future__ import annotations

from tensorfield.engine.dependencies import explain_import_error, install_hint


def test_missing_system_library_message_names_the_package():
    error = ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory")
    message = explain_import_error("open3d", error, "TSDF meshes")
    assert "\n" not in message
    assert "libusb-1.0.so.0" in message and "apt-get install -y libusb-1.0-0" in message
    assert install_hint("libEGL.so.1").endswith("apt-get install -y libegl1")
    missing = ModuleNotFoundError("No module named 'PyQt6'", name="PyQt6")
    assert explain_import_error("PyQt6.QtWidgets", missing).endswith("pip install 'tensorfield[viewer]'")



def test_process_without_pycolmap_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from tensorfield.app.cli import main

    frames = tmp_path / "photos"
    frames.mkdir()
    import imageio.v3 as iio
    import numpy as np

    for i in range(3):
        iio.imwrite(frames / f"{i}.png", (np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8))
    monkeypatch.setitem(sys.modules, "pycolmap", None)
    assert main(["process", str(frames), "--out", str(tmp_path / "data"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pycolmap (needed for tensorfield process) is not installed: pip install pycolmap" in err[0]
    assert sorted(p.name for p in (tmp_path / "data" / "images").iterdir())  # the copied frames stay


def test_viewer_without_pyqt_is_one_line(monkeypatch, capsys):
    """``tensorfield view`` on a machine without PyQt6 names the package to install."""
    import builtins

    from tensorfield.app.cli import main

    real_import = builtins.__import__

    def no_qt(name, *args, **kwargs):
        if name.startswith("PyQt6") or name.startswith("tensorfield.app.viewer"):
            raise ModuleNotFoundError(f"No module named '{name}'", name="PyQt6")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_qt)
    assert main(["view"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'tensorfield[viewer]'" in err[0]


def test_doctor_reports_and_names_the_install_command(monkeypatch, capsys):
    from tensorfield.app import doctor
    from tensorfield.app.cli import main

    monkeypatch.setattr(doctor, "missing_system_libraries", lambda: {"viewer (PyQt6)": ["libEGL.so.1"]})
    monkeypatch.setattr(doctor, "is_root", lambda: False)
    monkeypatch.setattr(doctor, "apt_command", lambda libs: "sudo apt-get install -y libegl1")
    assert main(["doctor", "--install"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "viewer (PyQt6) needs libEGL.so.1" in out
    assert "run: sudo apt-get install -y libegl1" in out
