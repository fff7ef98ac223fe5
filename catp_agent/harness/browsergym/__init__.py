"""Our agent inside BrowserGym and AgentLab, and BrowserGym's tasks inside our harness.

Needs ``pip install "catp-agent[browsergym]"`` (browsergym-core, -miniwob and -experiments; this
package refuses a browsergym-core older than :data:`support.MIN_BROWSERGYM`) and, for MiniWoB++,
``pip install --no-deps miniwob==1.1.0`` (the pages; BrowserGym's ``MINIWOB_URL`` is
:func:`miniwob_url`). Importing ``catp_agent`` never imports this package.

* :class:`CatpAgentArgs` (:mod:`.args`): AgentLab-compatible agent arguments; ``make_agent()``
  gives a :class:`CatpBrowserGymAgent` (:mod:`.agent`) wrapping :class:`policies.vlm.VLMPolicy`
  with any pruning method, ratio, dialect, device and dtype.
* :mod:`.mapping`: observations and actions, ours <-> BrowserGym's ``coord`` action set.
* :class:`BrowserGymTaskEnv` (:mod:`.env`): a BrowserGym task as our env, for
  ``catp-agent eval --tasks browsergym/miniwob.click-button``.
* :mod:`.support`: the version check, the system Chromium, the MiniWoB++ URL.
"""

from catp_agent.harness.browsergym.support import (MIN_BROWSERGYM, browsergym_task_ids, miniwob_url,
                                                   require_browsergym, use_system_chromium)

require_browsergym()

from catp_agent.harness.browsergym.agent import CatpBrowserGymAgent, coord_action_set  # noqa: E402
from catp_agent.harness.browsergym.args import CatpAgentArgs  # noqa: E402
from catp_agent.harness.browsergym.env import BrowserGymTaskEnv  # noqa: E402

__all__ = ["MIN_BROWSERGYM", "BrowserGymTaskEnv", "CatpAgentArgs", "CatpBrowserGymAgent", "browsergym_task_ids",
           "coord_action_set", "miniwob_url", "require_browsergym", "use_system_chromium"]
