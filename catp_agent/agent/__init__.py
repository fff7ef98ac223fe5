"""The GUI agent loop: past screenshots with their actions as in-context demonstrations, the
current screenshot with the instruction as the query, and the temporal signals of method.md
section 4 fed into CATP's stage 2."""

from catp_agent.agent.history import HistoryWindow, Screenshot
from catp_agent.agent.prompt import build_messages, parse_action_text
from catp_agent.agent.signals import TemporalSignals
from catp_agent.agent.vision_cache import VisionFeatureCache

__all__ = ["HistoryWindow", "Screenshot", "TemporalSignals", "VisionFeatureCache", "build_messages", "parse_action_text"]
