# BareCount: the commands README.md documents.
.PHONY: setup test demo up down walkthrough

setup:  ## install what BareCount needs (idempotent)
	bash scripts/setup.sh

test:   ## every test: fmt, clippy, unit, pgrx, end-to-end, demo, SQLsmith round
	bash scripts/test.sh

demo:   ## end-to-end demo: raw rows to a Flight SQL client, then shut down
	bash scripts/demo.sh

walkthrough:  ## the README's pipeline walkthrough against its own cluster
	bash scripts/walkthrough.sh

up:     ## like demo, but leave Postgres and barecount-flight running
	BARECOUNT_KEEP_RUNNING=1 bash scripts/demo.sh

down:   ## stop what `make up` started
	bash scripts/flight.sh stop demo; bash scripts/cluster.sh stop demo
