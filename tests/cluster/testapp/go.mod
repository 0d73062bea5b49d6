module twinfleet.local/clustertestapp

go 1.22
