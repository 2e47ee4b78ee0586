"""Objects that hold a file or port and are their own context manager.

``with thing:`` closes ``thing`` on the way out, whatever happened inside.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Closeable"]


class Closeable(abc.ABC):
    """Something with :meth:`close`; ``with`` calls it on exit."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
