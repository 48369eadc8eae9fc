# The project's Python services (persona-dispatcher, persona-agent, scripts/setup_sip.py) in one
# image; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The locked dependencies first (requirements/image.lock, from scripts/lock.sh: the service and
# both real model stacks, so that AGENT_STACK alone chooses), in a layer of their own: an edit of
# the sources rebuilds only the layers below.
COPY requirements/image.lock ./requirements/image.lock
RUN pip install --no-cache-dir --require-hashes -r requirements/image.lock
# What ships: the service's packages and the one entry-point script compose runs. The dev stack
# (devstack/), the tests and their harness (tests/) and the benchmarks stay out.
COPY pyproject.toml README.md ./
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
# The project itself, over the locked versions (--no-deps: nothing resolved here).
RUN pip install --no-cache-dir --no-deps .
# /app is root's and read-only to the services, which run as nobody. What they write (the agent's
# transcript, persona-dispatch-call's log) goes under /var/lib/persona-dispatcher, where
# docker-compose.yml mounts the named volume persona-data (owned by nobody, kept across restarts
# and image rebuilds). No VOLUME here: it would make an anonymous volume for every
# `docker compose run`.
RUN mkdir -p /var/lib/persona-dispatcher && chown nobody:nogroup /var/lib/persona-dispatcher
ENV TRANSCRIPT_PATH=/var/lib/persona-dispatcher/conversations/transcripts.jsonl \
    MANUAL_DISPATCH_LOG=/var/lib/persona-dispatcher/log/manual-dispatch.log
USER nobody
