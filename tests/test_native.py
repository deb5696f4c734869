"""The switch for the native extension (``labelgate.native``): which builds are used, and
what a panic inside one becomes."""

from __future__ import annotations

import types

import pytest

from labelgate import native
from labelgate.errors import LabelgateError


def _module(**attributes: object) -> types.ModuleType:
    module = types.ModuleType(native.MODULE)
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


def test_the_installed_extension_is_used_by_both_areas() -> None:
    from labelgate.classify import native as detectors
    from labelgate.oip import native as tensors

    # make test installs it (the Makefile builds proxy/native): a missing build fails here.
    assert detectors.available()
    assert tensors.available()


@pytest.mark.parametrize("abi", [None, native.ABI - 1, native.ABI + 1, str(native.ABI)])
def test_a_build_of_another_interface_is_not_used(monkeypatch: pytest.MonkeyPatch, abi: object) -> None:
    fake = _module() if abi is None else _module(ABI=abi)
    monkeypatch.setattr(native, "_import", lambda: fake)
    switch: native.NativeSwitch[object] = native.NativeSwitch(lambda module: True)
    assert not switch.available()
    assert not switch.on


def test_a_build_without_what_the_area_needs_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_import", lambda: _module(ABI=native.ABI))
    assert not native.NativeSwitch(lambda module: hasattr(module, "split_bytes")).available()
    assert native.NativeSwitch(lambda module: True).available()


def test_the_environment_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_import", lambda: _module(ABI=native.ABI))
    monkeypatch.setenv(native.SWITCH_VARIABLE, "0")
    switch: native.NativeSwitch[object] = native.NativeSwitch(lambda module: True)
    assert switch.available()
    assert not switch.on
    with switch.forced(True):
        assert switch.on
    assert not switch.on


def test_a_panic_becomes_a_refusal_and_anything_else_is_left_alone() -> None:
    # pyo3's PanicException derives from BaseException and is recognised by its full name.
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})
    with pytest.raises(LabelgateError) as refused:
        native.raise_if_panic(panic("index out of bounds"))
    assert refused.value.reason == native.NATIVE_KERNEL_FAILED
    assert "index out of bounds" not in str(refused.value)  # no text from inside the kernel
    native.raise_if_panic(ValueError("a Python error"))
    native.raise_if_panic(KeyboardInterrupt())
    native.raise_if_panic(
        type("PanicException", (Exception,), {"__module__": "pyo3_runtime"})("an Exception")
    )
    native.raise_if_panic(type("PanicException", (BaseException,), {})("another module's"))
