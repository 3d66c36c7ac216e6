# learnloop service image. Default command runs the interactions consumer;
# override the command for other roles, e.g. `docker run learnloop run ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the distribution (no extras: the embedded stack is for dev only).
# .dockerignore keeps tests, docs, .git and local venvs out of the context.
COPY . /src
RUN pip install /src && rm -rf /src

# Run as an unprivileged user.
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin learnloop
USER learnloop

# Metrics must listen on all interfaces inside a container to be scraped.
ENV LEARNLOOP_METRICS_HOST=0.0.0.0 \
    LEARNLOOP_METRICS_PORT=9464
EXPOSE 9464

ENTRYPOINT ["learnloop"]
CMD ["run", "interactions"]
