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
USER nobody
