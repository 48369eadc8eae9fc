"""What livekit-sip alone does (sipp → livekit-sip → livekit-server, no dispatcher, no agent).

These tests characterise the component we build on, not our behaviour: they pin the facts the
dispatcher relies on (a SIP participant per call, its attributes, ringing until someone in the room
publishes audio). The project's own full-chain calls are in tests/e2e; both use the SIP stack and
sipp harness of tests/e2e/sip_stack.py and tests/e2e/sipp.py.
"""
