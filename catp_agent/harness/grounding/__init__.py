"""The grounding probe: does a vision front end read? (see :mod:`.probe`)."""
