"""Replay: the state of a run at any position, verify, resume and fork."""

from lionstore.replay.resume import resume
from lionstore.replay.state import RunProjection, rebuild
from lionstore.replay.verify import Divergence, VerifyReport, verify

__all__ = ["Divergence", "RunProjection", "VerifyReport", "rebuild", "resume", "verify"]
