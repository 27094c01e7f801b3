# Two commands for a newcomer: `make demo` runs the service on embedded defaults, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
# No signing key here: `syndication init` makes var/signing-key for the demo's SQLite store and every command
# reads it, in make or not, so links signed in the demo still read when the commands are typed by hand. A real
# service sets SYNDICATION_SECRET_KEY (or SYNDICATION_SECRET_KEY_FILE) itself (docs/configuration.md).
# The demo's editor, "demo" with the password "demo-editor-password": a throwaway too, made an owner of the team by
# `init` (syndication people add NAME --role owner makes a real one; the team is then managed in the store).
export SYNDICATION_EDITORS ?= demo:scrypt$$15$$8$$3$$wBCkQl4aBYzhUm8uEnRveQ$$lWZ8Es5efnihzwz9hGJgRw5NQy0nZQl-r5H-6VUmFEc

.PHONY: setup demo serve run test check lint types bench messages clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/syndication --config $(CONFIG) init
	$(BIN)/syndication --config $(CONFIG) gather
	$(BIN)/syndication --config $(CONFIG) themes list
	$(BIN)/syndication --config $(CONFIG) posts list --limit 10
	$(BIN)/syndication --config $(CONFIG) feeds build
	$(BIN)/syndication --config $(CONFIG) digest preview --since 2025-10-01 --until 2025-12-01 --format html --out var/preview/digest.html
	$(BIN)/syndication --config $(CONFIG) digest preview --since 2025-10-01 --until 2025-12-01 --format text --out var/preview/digest.txt
	$(BIN)/syndication --config $(CONFIG) digest preview --since 2025-10-01 --until 2025-12-01 --format eml --out var/preview/digest.eml
	$(BIN)/syndication --config $(CONFIG) digest preview --since 2025-10-01 --until 2025-12-01 --language es --format html --out var/preview/digest.es.html
	@mkdir -p var && rm -rf var/outbox
	@$(BIN)/syndication --config $(CONFIG) mail-sink --port 8025 --outbox var/outbox & echo $$! > var/mail-sink.pid; sleep 2
	$(BIN)/syndication --config $(CONFIG) subscribers import examples/subscribers.csv --confirmed || true
	$(BIN)/syndication --config $(CONFIG) digest send --cadence weekly --since 2025-11-01T00:00:00Z --until 2025-12-01T00:00:00Z; \
	  status=$$?; kill `cat var/mail-sink.pid` 2>/dev/null; rm -f var/mail-sink.pid; sleep 1; exit $$status
	@echo
	@echo "Digest preview of the sample posts written to var/preview/ (digest.html, digest.txt, digest.eml, digest.es.html)."
	@echo "The sample subscribers' digests were delivered through a local SMTP server into var/outbox/:"
	@ls var/outbox
	@echo "Feeds written under var/feeds/ (open var/feeds/index.html). Serve them and the web pages with:"
	@echo "  make serve   # then http://127.0.0.1:8000/feeds/, /subscribe, /editions/, /themes/ and the editor's"
	@echo "               # pages at http://127.0.0.1:8000/editor/ (sign in as demo, password demo-editor-password);"
	@echo "               # emails the pages send (confirmations, tests) land in var/outbox/"
	@echo "or run the whole service, scheduler included (gathering, feeds, editions on schedule, sending):"
	@echo "  make run     # the same pages, plus 'syndication status' in another terminal shows its jobs"

serve: setup
	@mkdir -p var && ($(BIN)/syndication --config $(CONFIG) mail-sink --port 8025 --outbox var/outbox & echo $$! > var/mail-sink.pid)
	$(BIN)/syndication --config $(CONFIG) serve --port 8000; status=$$?; kill `cat var/mail-sink.pid` 2>/dev/null; \
	  rm -f var/mail-sink.pid; exit $$status

run: setup
	@mkdir -p var && ($(BIN)/syndication --config $(CONFIG) mail-sink --port 8025 --outbox var/outbox & echo $$! > var/mail-sink.pid)
	$(BIN)/syndication --config $(CONFIG) run --port 8000; status=$$?; kill `cat var/mail-sink.pid` 2>/dev/null; \
	  rm -f var/mail-sink.pid; exit $$status

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: setup
	$(BIN)/mypy

# Tests run in TEST_WORKERS processes (pytest-xdist): most of the suite waits on real servers, processes and
# browsers rather than on the CPU, so four workers finish in about half the time even on two cores. TEST_WORKERS=0
# runs them in this one process. The slowest are listed at the end.
TEST_WORKERS ?= 4

test: lint types
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=15

bench: setup
	$(BIN)/python -m bench

# The email catalogs keep their header when updated: its Plural-Forms picks each plural (without it Babel guesses
# CLDR's three forms for es, fr and pt, and a two-form entry falls back to English).
# The web pages' catalogs (domain web, which words the feeds too) likewise; both live in syndication/locales. Each
# extraction leaves the other's folders out (babel.cfg maps both). A new language: README.md, "Languages".
messages: setup
	$(BIN)/pybabel extract -F babel.cfg -o syndication/locales/messages.pot --no-location --omit-header --sort-output \
	  --ignore-dirs '.* _* web feeds' .
	$(BIN)/pybabel update -i syndication/locales/messages.pot -d syndication/locales
	$(BIN)/pybabel extract -F babel.cfg -o syndication/locales/web.pot --no-location --omit-header --sort-output \
	  --add-comments TRANSLATORS: --ignore-dirs '.* _* email' .
	$(BIN)/pybabel update -D web -i syndication/locales/web.pot -d syndication/locales

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache test-artifacts
