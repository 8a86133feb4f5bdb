# SIPp with the repository's scenarios: the carrier and the agent's desk
# phone of the docker-compose stack (see the `carrier` and `agent-phone`
# services in docker-compose.yml).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends sip-tester \
 && rm -rf /var/lib/apt/lists/*
# The built-in scenarios play ./pcap/<file>.
WORKDIR /sipp
RUN ln -s /usr/share/sip-tester /sipp/pcap
COPY tests/sipp/ /sipp/scenarios/
ENTRYPOINT ["sipp"]
