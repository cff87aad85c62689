# Two commands from a fresh clone: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint checkov terraform bench package clean
CHECKOV := build/checkov-venv/bin/checkov

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/totes-cdc demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r totes_cdc totes_ops local_aws capture stream_processors warehouse_loader dashboard

# checkov in its own virtualenv: it installs a fork of python-hcl2 under the same module name.
$(CHECKOV):
	$(PYTHON) -m venv build/checkov-venv
	build/checkov-venv/bin/pip install --quiet checkov==3.3.30

checkov: $(CHECKOV)
	$(CHECKOV) -d infra --framework terraform --skip-download --compact --quiet

# terraform validate and a mocked-provider plan of each environment; skipped without terraform.
terraform:
	infra/terraform-check.sh

test: lint checkov terraform
	$(BIN)/python -m pytest -n 2 --dist loadgroup --cov --cov-report=term

bench: $(STAMP)
	$(BIN)/python -m bench

package: $(STAMP)
	$(BIN)/python -m stream_processors.packaging dist/lambda

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
