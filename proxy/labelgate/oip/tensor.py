"""``Tensor``: one tensor's name, datatype, shape and flat row-major values.

A tensor decoded from a raw buffer is validated whole when it is decoded, but builds its
values (a ``bytes`` or number object per element) only when something first reads
``values``. Most outputs of a large reply never need them: they are scanned in their raw
form in one native call, masked whole, or sent on as they came (their raw form is known).
Building them anyway cost a 10,000-row reply more than its classification of those
columns, mostly in memory traffic (measured: ``bench.profile_response``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class Tensor:
    """One tensor: ``values`` is flat and row-major.

    Values are Python ``int`` (integer types), ``float`` (FP16/BF16/FP32/FP64), ``bool``
    (BOOL) or ``bytes`` (BYTES). They are never changed in place: masking makes new
    tensors (``with_values``), so a raw form known for some values stays true of them.
    """

    __slots__ = ("_raw", "_read", "_size", "_values", "datatype", "name", "shape")

    def __init__(self, name: str, datatype: str, shape: list[int], values: list[Any]) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self._values: list[Any] | None = values
        # The raw form of exactly the values, when known without encoding them.
        self._raw: bytes | None = None
        # Set only by ``decoded``: builds the values from ``_raw``; kept once they are built,
        # as the sign that they are exactly what the decoder made.
        self._read: Callable[[], list[Any]] | None = None
        self._size = 0

    @classmethod
    def decoded(
        cls,
        name: str,
        datatype: str,
        shape: list[int],
        data: bytes,
        count: int,
        read: Callable[[], list[Any]],
        values: list[Any] | None = None,
    ) -> Tensor:
        """The tensor whose raw form is ``data``, which the caller has validated as ``count``
        elements of ``datatype``; ``read()`` builds its values (a list of ``bytes`` for
        BYTES), once, when they are first asked for, unless ``values`` gives them built."""
        tensor = cls(name, datatype, shape, [])
        tensor._values, tensor._raw, tensor._read, tensor._size = values, data, read, count
        return tensor

    @property
    def values(self) -> list[Any]:
        values = self._values
        if values is None:
            assert self._read is not None  # only ``decoded`` leaves the values unbuilt
            values = self._values = self._read()
        return values

    @values.setter
    def values(self, values: list[Any]) -> None:
        # Other values: neither the raw form nor the decoder's guarantee holds for them.
        self._values, self._raw, self._read = values, None, None

    @property
    def size(self) -> int:
        """How many elements the tensor holds, without building them."""
        values = self._values
        return self._size if values is None else len(values)

    @property
    def values_built(self) -> bool:
        """Whether the values exist as objects yet (a decoded tensor builds them when first read)."""
        return self._values is not None

    def raw_form(self) -> bytes | None:
        """The raw bytes of ``values`` if known without encoding them (the buffer they were
        decoded from, or what ``remember_raw`` recorded), else None."""
        return self._raw

    def raw_source(self) -> bytes | None:
        """The raw buffer the values were decoded from (``decoded``), while they are still
        exactly its elements; None for any other tensor, even one with a ``raw_form``."""
        return self._raw if self._read is not None else None

    def remember_raw(self, data: bytes) -> Tensor:
        """Record that ``data`` is the raw form of ``values`` (the caller vouches); returns self."""
        # The values stay those read from the old raw form, and are no longer the decoder's.
        self._values, self._raw, self._read = self.values, data, None
        return self

    def byte_elements(self) -> list[bytes]:
        """A BYTES tensor's values as a list of ``bytes``: decoded values as they are (the
        decoder built exactly that, no check per element), any others as ``bytes_elements``
        makes them."""
        if self._read is not None:
            values: list[bytes] = self.values
            return values
        return bytes_elements(self.values)

    def with_values(self, values: list[Any]) -> Tensor:
        """A new tensor with this one's name, datatype and shape (a copy) holding ``values``."""
        return Tensor(self.name, self.datatype, list(self.shape), values)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Tensor)
        return (self.name, self.datatype, self.shape, self.values) == (
            other.name,
            other.datatype,
            other.shape,
            other.values,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"Tensor(name={self.name!r}, datatype={self.datatype!r}, shape={self.shape!r}, "
            f"values={self.values!r})"
        )


def bytes_elements(values: Sequence[Any]) -> list[bytes]:
    """A BYTES tensor's values as a list of ``bytes``: a decoded tensor's own list when it
    already is one (no copy per element; callers only read it), else converted."""
    # Counting type objects (compared by identity) is about 3x faster than a set of them.
    if list(map(type, values)).count(bytes) == len(values):
        return values if isinstance(values, list) else list(values)
    return [value.encode() if isinstance(value, str) else bytes(value) for value in values]
