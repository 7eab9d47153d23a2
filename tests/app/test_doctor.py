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

