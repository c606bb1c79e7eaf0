"""The one frame type that crosses stage boundaries (source -> sampler -> detector -> tracker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class Frame:
    """A decoded, sampled picture of one camera.

    ``image`` is H x W x 3 uint8 in BGR order (OpenCV's), C-contiguous, owned by this frame (no one else writes it).
    ``pts`` is the stream presentation time in seconds; ``captured_at`` the UTC wall-clock time the frame was
    received (tz-aware), which is what target records carry as Timestamp.
    """

    device_id: str
    image: npt.NDArray[np.uint8]
    pts: float
    captured_at: datetime
    keyframe: bool = False
    seq: int = 0
    instance_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
