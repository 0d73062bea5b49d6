module twinfleet/images/daprd/healthcheck

go 1.22
