# Developer entry points. See README.md.
SHELL := /bin/bash
.PHONY: setup test lint demo bench clean

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

lint:
	source env.sh && ruff check .

demo:
	bash scripts/demo.sh

bench:
	bash scripts/bench.sh

clean:
	rm -rf build install log demo_output
