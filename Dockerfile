# cvtasks: the C++ worker and beat with the Django bridge and the example project (CVProject).
#   docker build -t cvtasks .        podman build --format docker -t cvtasks .
# (podman: --format docker keeps the HEALTHCHECK, which the OCI image format has no field for.)
#
# Two stages: `build` compiles the binaries and modules with the project's CMake; the runtime
# stage has the shared libraries they link, wkhtmltopdf and the fonts, Debian's Python with
# Django and Celery, and no compiler, headers or test servers.
#
# Both stages keep the checkout's layout under /opt/cvtasks (build/bin, build/lib, templates,
# tasks/data, manage_bridge): the binaries find their modules in ../lib and the shipped CV
# templates and skills data at the paths CMake compiled in, and manage.py finds the binaries in
# build/bin, so nothing needs configuring.

ARG BASE_IMAGE=debian:bookworm

FROM ${BASE_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
# cmake's -j (the image builds with the project's own CMake, tests off).
ARG BUILD_JOBS=2
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libpoco-dev libmariadb-dev libpq-dev nlohmann-json3-dev libsimdjson-dev libspdlog-dev \
      libfmt-dev libsqlitecpp-dev libkainjow-mustache-dev libhowardhinnant-date-dev \
      zlib1g-dev libbz2-dev liblzma-dev libzstd-dev libbrotli-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/cvtasks
# The C++ sources only (the directories the top-level CMakeLists adds): a change to the Python
# side or the docs does not rebuild the binaries.
COPY CMakeLists.txt ./
COPY core core
COPY django django
COPY tasks tasks
COPY schedule schedule
COPY commands commands
# --worker-type's map is compiled into the worker from the bridge's file.
COPY manage_bridge/cvtasks/worker_types.json manage_bridge/cvtasks/worker_types.json
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
 && cmake --build build -j"${BUILD_JOBS}" \
 && strip --strip-debug build/bin/* build/lib/*.so
# The Debian packages owning every shared library the binaries and modules load: the runtime
# stage installs exactly these. (dpkg records the files of the essential libraries under /lib,
# which merged-/usr resolves to /usr/lib: a path is looked up both ways.)
RUN set -e; \
    ldd build/bin/* build/lib/*.so | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
      | xargs -r realpath > /tmp/libs; \
    for lib in $(cat /tmp/libs); do dpkg -S "$lib" 2>/dev/null || dpkg -S "${lib#/usr}"; done \
      > /tmp/owners; \
    cut -d: -f1 /tmp/owners | sort -u > build/runtime-packages.txt; \
    cat build/runtime-packages.txt

FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# What the tasks run and read (wkhtmltopdf, fonts, time zones) and the Django side.
# python3-aiosmtpd: `python3 -m aiosmtpd`, a mail sink for trying the stack without a mail server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      wkhtmltopdf fonts-dejavu-core fonts-noto-cjk tzdata ca-certificates \
      python3 python3-django python3-celery python3-redis python3-psycopg2 python3-aiosmtpd \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/cvtasks/build/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /opt/cvtasks/build/bin /opt/cvtasks/build/bin
COPY --from=build /opt/cvtasks/build/lib /opt/cvtasks/build/lib
COPY templates /opt/cvtasks/templates
COPY tasks/data /opt/cvtasks/tasks/data
COPY deploy/entrypoint.sh deploy/probe.py /opt/cvtasks/deploy/
COPY manage_bridge /opt/cvtasks/manage_bridge
# Fails the build when a binary or module misses a library. MEDIA_ROOT and the SQLite default
# live under CVPROJECT_DATA_DIR, the one directory www-data writes.
RUN ! ldd /opt/cvtasks/build/bin/* /opt/cvtasks/build/lib/*.so | grep 'not found' \
 && mkdir -p /var/lib/cvproject/media /var/lib/cvproject/beat \
 && chown -R www-data:www-data /var/lib/cvproject
ENV CVPROJECT_DATA_DIR=/var/lib/cvproject \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_HTTP_PORT=8001
# No VOLUME: compose.yaml mounts the media volume where it is shared; a VOLUME here would give
# every other container of the image (migrate, beat, mail) an anonymous volume left behind.
WORKDIR /opt/cvtasks/manage_bridge/example
USER www-data
EXPOSE 8000
# The worker's /healthz (run it with --http-port $WORKER_HTTP_PORT); other services of this image
# set their own check or none.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "/opt/cvtasks/deploy/probe.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/cvtasks/deploy/entrypoint.sh"]
CMD ["sh", "-c", "exec python3 manage.py run_celery_worker --worker-type all --http-port \"$WORKER_HTTP_PORT\""]
