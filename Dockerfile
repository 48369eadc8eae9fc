# The project's Python services (persona-dispatcher, persona-agent, scripts/setup_sip.py) in one
# image; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY webhooks ./webhooks
COPY dispatcher ./dispatcher
COPY agent ./agent
COPY config ./config
COPY scripts ./scripts
COPY user-mapping ./user-mapping
# Both real model stacks, so that AGENT_STACK alone chooses (the default is openai-realtime).
RUN pip install --no-cache-dir ".[openai,pipeline]"
USER nobody
