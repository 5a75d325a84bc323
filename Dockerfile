# syntax=docker/dockerfile:1
# gwrap: a static binary built in a Go image, copied into a slim Python image that runs Gunicorn.
#
#   docker build -t myapp .           (your app's code and requirements.txt beside this file)
#   docker run -p 8000:8000 -m 512m myapp
#
# To add gwrap to an existing image instead, build this file's first stage and copy one file:
#   COPY --from=gwrap-build /out/gwrap /usr/local/bin/gwrap
#   ENTRYPOINT ["/usr/local/bin/gwrap", "--", "gunicorn", "app:app"]

ARG GO_VERSION=1.26
ARG PYTHON_VERSION=3.12

FROM golang:${GO_VERSION}-bookworm AS gwrap-build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG GWRAP_VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${GWRAP_VERSION}" -o /out/gwrap ./cmd/gwrap

FROM python:${PYTHON_VERSION}-slim
# Gunicorn and the app's own packages; the demo app needs Flask.
COPY demo/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir gunicorn -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=gwrap-build /out/gwrap /usr/local/bin/gwrap
COPY entrypoint.sh /usr/local/bin/gwrap-entrypoint
WORKDIR /app
COPY demo/app.py /app/app.py
# Reports survive the container when /home/LogFiles (App Service) or this volume is mounted.
ENV GWRAP_REPORT_DIR=/var/log/gwrap PORT=8000
VOLUME ["/var/log/gwrap"]
EXPOSE 8000
# Exec form: gwrap (through the entrypoint's exec) is PID 1 and receives the platform's signals.
# No CMD: the entrypoint runs $APP_MODULE (default app:app), so `-e APP_MODULE=…` works (a CMD
# would override it); arguments after the image name replace it.
ENTRYPOINT ["/usr/local/bin/gwrap-entrypoint"]
