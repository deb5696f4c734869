"""The enforce stage (pure): apply the policy's masks to tensors or generic messages."""

from labelgate.enforce.masking import apply_masks
from labelgate.enforce.messages import apply_message_masks
from labelgate.enforce.strategies import HASH_PREFIX, MIN_HASH_KEY_BYTES, STRATEGIES, Mask, Masker, MaskIndex

__all__ = [
    "HASH_PREFIX",
    "MIN_HASH_KEY_BYTES",
    "STRATEGIES",
    "Mask",
    "MaskIndex",
    "Masker",
    "apply_masks",
    "apply_message_masks",
]
