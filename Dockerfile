# The project's Python services (persona-dispatcher, persona-agent, scripts/setup_sip.py) in one
# image; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
# What ships: the service's packages and the one entry-point script compose runs. The dev stack
# (devstack/), the tests and their harness (tests/) and the benchmarks stay out.
COPY contract ./contract
COPY config ./config
COPY telemetry ./telemetry
COPY dispatcher ./dispatcher
COPY webhooks ./webhooks
COPY agent ./agent
COPY provisioning ./provisioning
COPY operator_tools ./operator_tools
COPY scripts/setup_sip.py ./scripts/setup_sip.py
COPY user-mapping ./user-mapping
# Both real model stacks, so that AGENT_STACK alone chooses (the default is openai-realtime).
RUN pip install --no-cache-dir ".[openai,pipeline]"
# /app is root's and read-only to the services, which run as nobody. What they write (the agent's
# transcript, persona-dispatch-call's log) goes under /var/lib/persona-dispatcher, which
# docker-compose.yml mounts as the named volume persona-data (owned by nobody, kept across
# restarts and image rebuilds).
RUN mkdir -p /var/lib/persona-dispatcher && chown nobody:nogroup /var/lib/persona-dispatcher
ENV TRANSCRIPT_PATH=/var/lib/persona-dispatcher/conversations/transcripts.jsonl \
    MANUAL_DISPATCH_LOG=/var/lib/persona-dispatcher/log/manual-dispatch.log
VOLUME /var/lib/persona-dispatcher
USER nobody
