"""One Tryton database, one company per legal entity: each entity's connector writes in its
own company; taxes by treatment, exchange rates, payment terms and due dates; set-up and
rates loaded idempotently. Against a real Tryton (one server for the module, restored from
the pristine sandbox database with the three sandbox entities)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from closeloop.connectors.tryton.connector import TrytonConnector, idempotency_key
from closeloop.connectors.tryton.operations import TrytonOperations
from closeloop.connectors.tryton.rates import RateConflictError, load_rates
from closeloop.connectors.tryton.rpc import TrytonRPC
from closeloop.connectors.tryton.sandbox import SANDBOX_ENTITIES
from closeloop.connectors.tryton.setup import (
    TrytonSetup,
    find_ids,
    initialize,
    initialize_entities,
)
from closeloop.domain.commands import Applied, Command, ExceptionClass, Permanent
from closeloop.domain.entities import ExchangeRate, RatesConfig
from closeloop.domain.taxrules import REVERSE_CHARGE_MENTION, TaxTreatment
from closeloop.sandboxes.tryton.server import TrytonServer
from tests.test_tryton import count, unique

pytestmark = pytest.mark.tryton
Y = date.today().year - 1  # a past fiscal year of the sandbox: no future-date warnings
CHF_FROM = date(Y, 3, 1)  # the rates the module loads start here


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """A real Tryton of its own for the module (its invoice sequences number by date)."""
    from closeloop.devtools.sandboxctl import start_tryton
    from closeloop.sandboxes.tryton.server import SandboxError

    uri = os.environ.get("CLOSELOOP_TEST_TRYTON_URI", "sqlite://")
    try:
        started = start_tryton(
            tmp_path_factory.mktemp("entities"), uri=uri, database=f"cl_ent_{os.getpid()}"
        )
    except SandboxError as exc:
        pytest.skip(f"no Tryton here: {exc}")
    yield started
    started.stop()


def session(server: TrytonServer) -> TrytonRPC:
    return TrytonRPC(server.url, server.database, server.user, server.password)


@pytest.fixture(scope="module")
def admin(server: TrytonServer) -> Iterator[TrytonRPC]:
    rpc = session(server)
    yield rpc
    rpc.close()


@pytest.fixture(scope="module")
def erp(server: TrytonServer) -> Iterator[dict[str, TrytonConnector]]:
    """Each sandbox entity's connector (its own session, in its company), as the plugin
    builds them from ``company: <code>``."""
    connectors = {}
    for entity in SANDBOX_ENTITIES:
        rpc = session(server)
        ops = TrytonOperations(rpc, find_ids(rpc, entity.code))
        connectors[entity.code] = TrytonConnector(
            ops, system="tryton_" + entity.code.lower().replace("-", "_")
        )
    yield connectors
    for connector in connectors.values():
        connector.close()


def command(operation: str, key: str, payload: dict[str, Any]) -> Command:
    return Command("tryton", operation, key, idempotency_key(operation, key), payload)


def applied(connector: TrytonConnector, *commands: Command) -> list[dict[str, Any]]:
    outcomes = connector.execute(list(commands))
    for outcome in outcomes:
        assert isinstance(outcome, Applied), outcome
    return [o.result for o in outcomes if isinstance(o, Applied)]


def engagement(
    connector: TrytonConnector,
    country: str,
    *,
    tax_ids: tuple[tuple[str, str], ...] = (),
    treatment: str | None = None,
    hours: str = "10",
    day: date = date(Y, 1, 10),
    rate: str = "150",
) -> tuple[str, str]:
    """A customer, a project with one task (in ``treatment``) and ``hours`` of time on
    ``day``, through ``connector``; the customer's code and the project key."""
    customer, project = unique("C"), unique("ENG")
    applied(
        connector,
        command(
            "upsert_customer",
            customer,
            {
                "code": customer,
                "name": f"Customer {customer}",
                "country": country,
                "tax_ids": [list(t) for t in tax_ids],
            },
        ),
        command(
            "upsert_project",
            project,
            {
                "key": project,
                "name": f"Project {project}",
                "customer_name": f"Customer {customer}",
                "customer_code": customer,
                "currency": "EUR",
                "tasks": [{"name": "Dev", "hourly_rate": rate}],
                "tax_treatment": treatment,
            },
        ),
        command(
            "add_timesheet_line",
            f"{project}-1",
            {
                "key": f"{project}-1",
                "employee_key": "ana",
                "employee_name": "Ana Example",
                "task_key": f"{project}:Dev",
                "date": day.isoformat(),
                "hours": hours,
            },
        ),
    )
    return customer, project


def invoice(project: str, up_to: date, **terms: Any) -> Command:
    reference = unique("INV")
    payload = {"project_key": project, "up_to": up_to.isoformat(), "reference": reference}
    return command("invoice_project", reference, payload | terms)


def post(reference: str) -> Command:
    return command("post_invoice", reference, {"reference": reference})


def read_invoice(admin: TrytonRPC, reference: str) -> dict[str, Any]:
    (row,) = admin.search_read(
        "account.invoice",
        [["reference", "=", reference]],
        [
            "company.party.code",
            "currency.code",
            "state",
            "number",
            "untaxed_amount",
            "tax_amount",
            "total_amount",
            "comment",
            "party_tax_identifier.code",
            "payment_term.name",
            "lines.taxes",
            "move.lines.debit",
        ],
    )
    return row


def test_each_entity_writes_in_its_own_company(
    admin: TrytonRPC, erp: dict[str, TrytonConnector]
) -> None:
    companies = {code: c.operations.ids.company for code, c in erp.items()}
    assert len(set(companies.values())) == 3
    assert find_ids(admin).company == companies["DE-GMBH"]  # the user's current company
    made = {}
    for code in ("DE-GMBH", "GB-LTD"):
        _, project = engagement(erp[code], "DE", tax_ids=(("eu_vat", "DE136695976"),))
        (draft,) = applied(erp[code], invoice(project, date(Y, 1, 31)))
        made[code] = (project, draft)
        assert (
            draft["legal_entity"] == code
            and draft["currency"] == erp[code].operations.ids.currency_code
        )
    for code, (project, draft) in made.items():
        (work,) = admin.search_read(
            "project.work", [["comment", "=", f"closeloop:{project}"]], ["company"]
        )
        assert work["company"] == companies[code]
        lines = admin.search_read(
            "timesheet.line",
            [["description", "like", f"%[cl:{project}-1]"]],
            ["company", "employee.company"],
        )
        assert [(t["company"], t["employee."]["company"]) for t in lines] == [
            (companies[code], companies[code])
        ]
        row = read_invoice(admin, draft["reference"])
        assert row["company."]["party."]["code"] == code
    # one person, one party, an employee in each company
    (party,) = admin.search_read("party.party", [["code", "=", "EMP-ana"]], ["id"])
    employees = admin.search_read("company.employee", [["party", "=", party["id"]]], ["company"])
    assert sorted(e["company"] for e in employees) == sorted(
        [companies["DE-GMBH"], companies["GB-LTD"]]
    )
    # each connector sees its own company's invoices only
    de_refs = {i.reference for i in erp["DE-GMBH"].operations.read_invoices([])}
    assert made["DE-GMBH"][1]["reference"] in de_refs
    assert made["GB-LTD"][1]["reference"] not in de_refs


def test_taxes_follow_the_treatment(admin: TrytonRPC, erp: dict[str, TrytonConnector]) -> None:
    de, us_inc = erp["DE-GMBH"], erp["US-INC"]
    _, domestic = engagement(
        de, "DE", tax_ids=(("eu_vat", "DE136695976"),), treatment="domestic", hours="10"
    )
    _, reverse = engagement(
        de, "FR", tax_ids=(("eu_vat", "FR40303265045"),), treatment="reverse_charge"
    )
    _, outside = engagement(de, "US", treatment="outside_scope")
    _, american = engagement(us_inc, "US", treatment="no_vat")
    up_to = date(Y, 1, 31)
    mention = REVERSE_CHARGE_MENTION
    drafts = applied(
        de,
        invoice(domestic, up_to),
        invoice(reverse, up_to, mention=mention, customer_tax_id="FR 40 303265045"),
        invoice(outside, up_to, mention="Outside the scope of VAT"),
    )
    (us_draft,) = applied(us_inc, invoice(american, up_to))
    assert [d["tax_amount"] for d in drafts] == ["285.00", "0.00", "0.00"]  # 1,500 x 19 %
    assert [d["total_amount"] for d in drafts] == ["1785.00", "1500.00", "1500.00"]
    ids = de.operations.ids
    rows = [read_invoice(admin, d["reference"]) for d in drafts]
    assert [r["lines."][0]["taxes"] for r in rows] == [
        [ids.taxes[TaxTreatment(t)]] for t in ("domestic", "reverse_charge", "outside_scope")
    ]
    assert rows[1]["comment"] == f"{mention}\nCustomer VAT number: FR 40 303265045"
    assert rows[1]["party_tax_identifier."]["code"] == "FR40303265045"
    assert rows[2]["comment"] == "Outside the scope of VAT" and not rows[0]["comment"]
    us_row = read_invoice(admin, us_draft["reference"])
    assert us_row["lines."][0]["taxes"] == [] and us_draft["tax_amount"] == "0.00"
    assert us_row["currency."]["code"] == "USD"


def test_load_rates_is_idempotent_and_refuses_a_conflicting_rate(admin: TrytonRPC) -> None:
    rates = RatesConfig(
        base="EUR",
        rates=(
            ExchangeRate(currency="CHF", valid_from=CHF_FROM, rate=Decimal("0.93"), source="ECB"),
            ExchangeRate(currency="GBP", valid_from=CHF_FROM, rate=Decimal("0.85"), source="ECB"),
        ),
    ).all_rates()
    loaded = count(admin, "currency.currency.rate", [])
    first = load_rates(admin, rates)  # EUR, CHF and GBP, unless another test loaded some
    assert first >= 1 and count(admin, "currency.currency.rate", []) == loaded + first
    calls = admin.calls
    assert load_rates(admin, rates) == 0
    assert admin.calls - calls <= 2  # currencies and rates read, nothing created
    before = count(admin, "currency.currency.rate", [])
    wrong = ExchangeRate(currency="CHF", valid_from=CHF_FROM, rate=Decimal("0.95"), source="typo")
    with pytest.raises(RateConflictError, match=r"CHF on .*rate 0\.93, the load says 0\.95"):
        load_rates(admin, [wrong])
    assert count(admin, "currency.currency.rate", []) == before


def test_an_invoice_in_a_foreign_currency_posts_with_rates_and_its_due_date(
    admin: TrytonRPC, erp: dict[str, TrytonConnector]
) -> None:
    de = erp["DE-GMBH"]
    load_rates(
        admin,
        RatesConfig(
            rates=(
                ExchangeRate(
                    currency="CHF", valid_from=CHF_FROM, rate=Decimal("0.93"), source="ECB"
                ),
            )
        ).all_rates(),
    )
    _, project = engagement(
        de, "CH", treatment="outside_scope", hours="8", day=date(Y, 6, 3), rate="178.50"
    )
    on = date(Y, 6, 30)
    request = invoice(project, on, currency="CHF", payment_terms_days=30)
    (draft,) = applied(de, request)
    assert draft["currency"] == "CHF" and draft["due_date"] is None
    (posted,) = applied(de, post(draft["reference"]))
    assert posted["state"] == "posted" and posted["number"].startswith(f"DE-GMBH/{Y}/")
    assert posted["due_date"] == (on + timedelta(days=30)).isoformat()
    row = read_invoice(admin, draft["reference"])
    assert row["currency."]["code"] == "CHF" and row["total_amount"] == Decimal("1428.00")
    assert row["payment_term."]["name"] == "Net 30 days"
    debit = sum(line["debit"] for line in row["move."]["lines."])
    assert debit == Decimal("1535.48")  # the move is in EUR: 1,428 CHF / 0.93
    change = [
        c
        for page in de.read_changes("account.invoice", None)
        for c in page
        if c.payload["reference"] == draft["reference"]
    ]
    assert change[-1].payload["due_date"] == posted["due_date"]
    assert change[-1].payload["legal_entity"] == "DE-GMBH"


def test_a_foreign_currency_without_a_rate_is_refused_alone_creating_nothing(
    admin: TrytonRPC, erp: dict[str, TrytonConnector]
) -> None:
    de = erp["DE-GMBH"]
    before = date(Y, 2, 10)  # before any CHF rate (the module's start on CHF_FROM)
    _, chf = engagement(de, "CH", treatment="outside_scope", day=before)
    _, eur = engagement(de, "DE", tax_ids=(("eu_vat", "DE136695976"),), day=before)
    refused_request = invoice(chf, date(Y, 2, 15), currency="CHF")
    calls = de.operations.rpc.calls
    refused, done = de.execute([refused_request, invoice(eur, date(Y, 2, 15), currency="EUR")])
    assert isinstance(refused, Permanent) and refused.error_class is ExceptionClass.VALIDATION
    assert f"no exchange rate for CHF and EUR on or before {Y}-02-15" in refused.message
    assert "company DE-GMBH keeps its books in EUR" in refused.message
    assert "closeloop tryton rates" in refused.message
    assert isinstance(done, Applied) and done.result["currency"] == "EUR"
    assert de.operations.rpc.calls - calls == 8  # the screen's read and the seven of invoicing
    assert (
        count(admin, "account.invoice", [["reference", "=", refused_request.payload["reference"]]])
        == 0
    )
    (line,) = admin.search_read(
        "timesheet.line", [["description", "like", f"%[cl:{chf}-1]"]], ["invoice_line"]
    )
    assert line["invoice_line"] is None


def test_init_twice_creates_nothing_the_second_time(admin: TrytonRPC) -> None:
    models = [
        "company.company",
        "party.party",
        "account.account",
        "account.fiscalyear",
        "ir.sequence.strict",
        "account.tax",
        "account.tax.rule",
        "account.tax.rule.line",
        "product.category",
        "product.product",
        "account.invoice.payment.method",
        "currency.currency",
    ]
    before = {m: count(admin, m, []) for m in models}
    setups = [TrytonSetup.for_entity(e) for e in SANDBOX_ENTITIES]
    ids = initialize_entities(admin, setups)
    assert {m: count(admin, m, []) for m in models} == before
    assert before["company.company"] == 3 and before["account.fiscalyear"] == 9
    assert before["account.tax"] == 6  # DE and GB: VAT, reverse charge, outside scope
    assert ids["US-INC"].taxes == {} and ids["US-INC"].tax_rules == {}
    assert ids["GB-LTD"].currency_code == "GBP" and ids["GB-LTD"].tax is not None
    (user,) = admin.search_read(
        "res.user", [["id", "=", admin.uid]], ["companies", "company", "company_filter"]
    )
    assert sorted(user["companies"]) == sorted(i.company for i in ids.values())
    assert user["company_filter"] == "all" and user["company"] == ids["DE-GMBH"].company


def test_find_ids_names_a_missing_entity(admin: TrytonRPC) -> None:
    with pytest.raises(LookupError, match=r"no company for legal entity FR-SAS.*tryton init"):
        find_ids(admin, "FR-SAS")


def test_a_company_of_the_single_company_version_is_adopted(admin: TrytonRPC) -> None:
    """A database made before entities: its company's party has Tryton's numeric code (which
    Tryton never changes); ``init`` adopts it by name instead of making a second one."""
    name = unique("Old Firm GmbH")
    party = admin.create("party.party", [{"name": name}])[0]
    (currency,) = admin.search_read("currency.currency", [["code", "=", "EUR"]], ["id"])
    old = admin.create("company.company", [{"party": party, "currency": currency["id"]}])[0]
    setup = TrytonSetup(code="OLD-GMBH", company_name=name, fiscal_years=(Y,))
    ids = initialize(admin, setup)
    assert ids.company == old and ids.entity == "OLD-GMBH" and ids.tax is not None
    assert find_ids(admin, "OLD-GMBH") == ids
    assert count(admin, "company.company", [["party.name", "=", name]]) == 1


def test_the_tryton_init_and_rates_commands(server: TrytonServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from closeloop.cli import app

    rates = tmp_path / "rates.csv"
    rates.write_text(f"date,currency,rate,source\n{Y}-09-01,CHF,0.92,ECB\n{Y}-09-01,USD,1.1,ECB\n")
    config = tmp_path / "closeloop.yaml"
    entities = {e.code: e.model_dump(mode="json", exclude={"code"}) for e in SANDBOX_ENTITIES}
    config.write_text(
        yaml.safe_dump(
            {
                "legal_entities": entities,
                "exchange_rates": {
                    "base": "EUR",
                    "rates": [
                        {
                            "currency": "GBP",
                            "valid_from": f"{Y}-09-01",
                            "rate": "0.86",
                            "source": "ECB",
                        }
                    ],
                },
            }
        )
    )
    target = ["--url", server.url, "--database", server.database, "--password", server.password]
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["tryton", *args, *target, "--config", str(config)])
        assert result.exit_code == code, result.output
        return result.output

    init = run("init")
    assert "US-INC: company" in init and "exchange rates loaded: 2 of 2" in init  # GBP, EUR
    assert "exchange rates loaded: 2 of 3" in run("rates", "--file", str(rates))  # EUR was there
    assert "loaded: 0 of 3" in run("rates", "--file", str(rates))
    rates.write_text(f"date,currency,rate,source\n{Y}-09-01,CHF,0.9,typo\n")
    assert "Tryton has the rate 0.92, the load says 0.9" in run(
        "rates", "--file", str(rates), code=1
    )
