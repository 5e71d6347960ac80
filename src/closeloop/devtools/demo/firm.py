"""The firm the demo (and the end-to-end tests) run: clients, closed-won deals, consultants
and their time, made deterministically from a seed.

Northwind Advisory sells time-and-materials engagements to clients in eight countries
through three legal entities (:data:`SELLS`): a German GmbH (EUR; its Swiss clients in CHF),
a UK Ltd (GBP) and a US Inc (USD). Deals name their entity on the opportunity
(``Legal_Entity__c``) or take the default by the account's country; some of the GmbH's sales
go abroad in the client's currency. Accounts have payment terms of 14, 30 or 60 days. Over
the quarter before the current month its sales team closed deals in Salesforce; some accounts
are already customers in the ERP (matched by tax id, or by name and address); a few deals
carry missing or invalid data on purpose (an entity that does not exist, a currency its
entity does not invoice in, an EU client abroad without a VAT number); one needs finance
approval; one is sold in a currency the ERP has no exchange rate for; finance closes two
projects in the ERP part way (time logged after that is refused). ``make_firm(...,
entities=False)`` is the firm of one company billing everything in EUR.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from closeloop.domain.taxids import validate_tax_id

ROLES = {
    "Partner": Decimal("260.00"),
    "Principal": Decimal("220.00"),
    "Senior Consultant": Decimal("180.00"),
    "Consultant": Decimal("140.00"),
    "Analyst": Decimal("95.00"),
}
# country: (name in the CRM, legal form, cities with postal codes, tax id shape)
COUNTRIES: dict[str, tuple[str, str, list[tuple[str, str]], tuple[str, int]]] = {
    "DE": ("Germany", "GmbH", [("Berlin", "10115"), ("Munich", "80331")], ("DE", 9)),
    "AT": ("Austria", "GmbH", [("Vienna", "1010"), ("Graz", "8010")], ("ATU", 8)),
    "CH": ("Switzerland", "AG", [("Zurich", "8001"), ("Basel", "4051")], ("CHE", 9)),
    "FR": ("France", "SAS", [("Paris", "75002"), ("Lyon", "69002")], ("FR", 11)),
    "NL": ("Netherlands", "B.V.", [("Amsterdam", "1012"), ("Utrecht", "3511")], ("NL", 9)),
    "BE": ("Belgium", "NV", [("Brussels", "1000"), ("Antwerp", "2000")], ("BE0", 9)),
    "GB": ("United Kingdom", "Ltd", [("London", "EC1A 1BB"), ("Leeds", "LS1 1UR")], ("GB", 9)),
    "US": ("United States", "Inc.", [("Boston", "02108"), ("Chicago", "60601")], ("", 9)),
}
_CODE_OF_NAME = {name: code for code, (name, *_rest) in COUNTRIES.items()}
# country: the entity that sells to it by default (the mapping's default by account
# country) and the currency of its deals
SELLS: dict[str, tuple[str, str]] = {
    "DE": ("DE-GMBH", "EUR"),
    "AT": ("DE-GMBH", "EUR"),
    "CH": ("DE-GMBH", "CHF"),
    "FR": ("DE-GMBH", "EUR"),
    "NL": ("DE-GMBH", "EUR"),
    "BE": ("DE-GMBH", "EUR"),
    "GB": ("GB-LTD", "GBP"),
    "US": ("US-INC", "USD"),
}
PRICE_LEVEL = {
    "EUR": Decimal(1),
    "CHF": Decimal("0.95"),
    "GBP": Decimal("0.85"),
    "USD": Decimal("1.10"),
}
"""The rate card in each currency: the EUR rates times this, rounded to whole units."""
ACQUIRED = "GB-ACQ"
"""The acquired UK unit's legal entity: it invoices in GBP from its own ERP (Xero)."""
TERMS_DAYS = (30, 14, 60)  #: accounts' payment terms, in turn
NAMES = (
    "Alder Bright Cobalt Delta Ember Fjord Granite Harbor Iris Juniper Kestrel Lumen Meridian "
    "Nimbus Orchid Pioneer Quarry Riverside Summit Tidewater Umber Vantage Willow Xenon Yarrow "
    "Zephyr Atlas Beacon Cedar Dune Evergreen Falcon Glacier Horizon Ironwood Jasper Keystone "
    "Larch Mistral Northstar"
).split()
TRADES = ("Logistics", "Foods", "Energy", "Retail", "Pharma", "Insurance", "Mobility", "Media")
FIRST = "Ana Ben Chloe Dev Elif Farid Greta Hugo Ines Jonas Kira Luca Mira Nils Omar Pia".split()
LAST = "Adler Berg Costa Dahl Eriksen Fontaine Garcia Horvat Ito Jansen Keller Laurent".split()


def tax_id(country: str, rng: random.Random) -> str:
    """A valid tax id of ``country`` (VAT number, Swiss UID or US EIN), drawn from ``rng``."""
    prefix, digits = COUNTRIES[country][3]
    while True:
        body = "".join(rng.choice("0123456789") for _ in range(digits))
        if country == "FR":
            body = "".join(rng.choice("0123456789") for _ in range(2)) + body[2:]
        candidate = f"{prefix}{body}" + ("B01" if country == "NL" else "")
        try:
            validate_tax_id(candidate, country)
        except ValueError:
            continue
        return candidate


def sf_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id (key prefix, digits only, so the case suffix is AAA)."""
    return f"{prefix}5g0000{number:06d}AAA"


@dataclass
class Firm:
    """What the demo seeds and what it expects. ``salesforce``: the org's records (seed
    shape); ``erp_customers``: customers the ERP already has (code, name, country, tax ids,
    address); ``consultants``: Harvest users; ``blocked``: deal id -> the words its blocking
    reason contains; ``needs_approval``: the deal waiting for finance; ``finance_closes``:
    deal id -> the day finance closes its ERP project; ``matches``: account id -> how it
    should be matched (``tax_id``, ``similar``; others are created); ``deals``: deal id ->
    ``{"account", "start", "roles", "entity", "currency", "rates": {role: Decimal}}``;
    ``no_rate``: deal id -> the currency its entity has no exchange rate for (its invoices
    wait for the rate as a business exception); ``billing``, ``amended``, ``credited``: the
    deals sold other than by time and materials, the deals amended and the invoices credited
    (:mod:`closeloop.devtools.demo.billing`); ``acquired``: the deals of the acquired unit
    (:data:`ACQUIRED`, on its own ERP), ``acquired_customers``: the clients its ERP already
    has (shaped as ``erp_customers``)."""

    start: date
    end: date
    salesforce: dict[str, list[dict[str, Any]]]
    erp_customers: list[dict[str, Any]]
    consultants: list[dict[str, Any]]
    blocked: dict[str, str] = field(default_factory=dict)
    needs_approval: str = ""
    finance_closes: dict[str, date] = field(default_factory=dict)
    matches: dict[str, str] = field(default_factory=dict)
    deals: dict[str, dict[str, Any]] = field(default_factory=dict)
    no_rate: dict[str, str] = field(default_factory=dict)
    billing: dict[str, dict[str, Any]] = field(default_factory=dict)
    amended: dict[str, str] = field(default_factory=dict)
    credited: list[str] = field(default_factory=list)
    short_plans: dict[str, Decimal] = field(default_factory=dict)
    acquired: set[str] = field(default_factory=set)
    acquired_customers: list[dict[str, Any]] = field(default_factory=list)

    def method(self, deal_id: str) -> str:
        """How the deal bills: ``time_and_materials`` unless :mod:`.billing` sold it
        otherwise."""
        return str(self.billing.get(deal_id, {}).get("method") or "time_and_materials")

    @property
    def valid_deals(self) -> list[str]:
        """Deals that should be mobilized (provisionally or not)."""
        return [d for d in self.deals if d not in self.blocked]


def make_firm(
    today: date,
    *,
    clients: int = 40,
    deals: int = 60,
    consultants: int = 25,
    seed: int = 7,
    names_from: int = 0,
    entities: bool = True,
    every_way: bool | None = None,
    acquired: bool = False,
) -> Firm:
    """The firm as of ``today``: deals closed over the three months before ``today``'s month.
    ``seed`` (0-998) draws the data and numbers the records; client names are taken from
    the ``names_from``-th name on. Firms sharing an ERP need different seeds and disjoint
    name ranges: the ERP matches customers by name and address too. ``entities``: sell
    through the three entities in the clients' currencies (else one company, all in EUR);
    ``every_way``: sell some deals fixed fee, retainer and with expenses
    (:func:`closeloop.devtools.demo.billing.sell_every_way`; default: with entities);
    ``acquired`` (with entities): every second sound UK client is the acquired unit's
    (:func:`_acquire`)."""
    rng = random.Random(seed)
    first_of_month = today.replace(day=1)
    end = first_of_month - timedelta(days=1)
    start = ((end.replace(day=1) - timedelta(days=1)).replace(day=1) - timedelta(days=1)).replace(
        day=1
    )
    countries = list(COUNTRIES)
    if entities:  # every entity among the first clients, however small the firm
        countries = ["DE", "GB", "US", "CH", "FR", "AT", "NL", "BE"]
    accounts, erp_customers, matches = [], [], {}
    for n in range(clients):
        country = countries[n % len(countries)]
        crm_country, form, cities, _ = COUNTRIES[country]
        city, postal = rng.choice(cities)
        legal = f"{NAMES[(names_from + n) % len(NAMES)]} {rng.choice(TRADES)} {form}"
        account_id = sf_id("001", seed * 1000 + n + 1)
        number = tax_id(country, rng)
        street = f"{rng.randint(1, 99)} {rng.choice(('Market', 'Station', 'Harbour'))} Street"
        accounts.append(
            {
                "Id": account_id,
                "Name": legal.rsplit(" ", 1)[0],
                "Legal_Name__c": legal,
                "BillingCountry": crm_country,
                "BillingStreet": street,
                "BillingCity": city,
                "BillingPostalCode": postal,
                "Tax_Id__c": number,
                "CurrencyIsoCode": SELLS[country][1] if entities else "EUR",
                "Payment_Terms_Days__c": TERMS_DAYS[n % len(TERMS_DAYS)],
            }
        )
        if n % 4 == 1 and n < 28:  # the ERP knows some clients already
            by_tax_id = n % 8 == 1
            matches[account_id] = "tax_id" if by_tax_id else "similar"
            scheme = validate_tax_id(number, country)[0]
            erp_customers.append(
                {
                    "account": account_id,
                    "code": f"C{seed:03d}{n:03d}",
                    "name": legal,
                    "country": country,
                    "tax_ids": [(scheme, number)] if by_tax_id else [],
                    "address": {"line1": street, "city": city, "postal_code": postal},
                }
            )
    firm = Firm(start, end, {}, erp_customers, [], matches=matches)
    _bad_accounts(firm, accounts, clients, entities)
    opportunities, items = [], []
    span = (end - start).days
    for n in range(deals):
        deal_id = sf_id("006", seed * 1000 + n + 1)
        account = accounts[n % clients]
        close = start + timedelta(days=rng.randrange(0, max(span - 20, 1)))
        begin = close + timedelta(days=rng.randint(3, 10))
        roles = rng.sample(sorted(ROLES), k=rng.choice((2, 2, 3)))
        entity, currency = _seller(account, n, clients, entities)
        rates = {r: (ROLES[r] * PRICE_LEVEL[currency]).quantize(Decimal(1)) for r in roles}
        deal = {
            "Id": deal_id,
            "Name": f"{account['Name']}: {rng.choice(('ERP rollout', 'Data platform', 'Audit'))}",
            "AccountId": account["Id"],
            "StageName": "Closed Won",
            "CloseDate": close.isoformat(),
            "CurrencyIsoCode": currency,
            "Start_Date__c": begin.isoformat(),
            "Billing_Method__c": "Time and Materials",
            "Finance_Approval__c": "Not Required",
            "SOW_Reference__c": f"SOW-{2026}-{n + 1:03d}",
        }
        if entities and entity != SELLS[_country(account)][0]:
            deal["Legal_Entity__c"] = entity  # not the default of the account's country
        opportunities.append(deal)
        firm.deals[deal_id] = {
            "account": account["Id"],
            "start": begin,
            "roles": roles,
            "entity": entity if entities else None,
            "currency": currency,
            "rates": rates,
            "terms": account["Payment_Terms_Days__c"],
            "country": _country(account) if account.get("BillingCountry") else None,
        }
        for role in roles:
            items.append(
                {
                    "OpportunityId": deal_id,
                    "Product2Id": sf_id("01t", 1),
                    "Quantity": rng.choice((80, 120, 160, 200)),
                    "UnitPrice": str(rates[role]),
                    "Role__c": role,
                    "CurrencyIsoCode": currency,
                }
            )
        if account["Id"] in firm.blocked:
            firm.blocked[deal_id] = firm.blocked[account["Id"]]
    _bad_deals(firm, opportunities, items, entities)
    if entities and acquired:
        _acquire(firm, accounts, opportunities)
    firm.salesforce = {
        "Account": accounts,
        "Product2": [{"Id": sf_id("01t", 1), "Name": "Consulting"}],
        "Opportunity": opportunities,
        "OpportunityLineItem": items,
        "Milestone__c": [],
    }
    for index, (deal_id, short) in enumerate(firm.short_plans.items()):
        fee = fee_of(deal_id, items)
        milestone = {"Id": sf_id("a0M", 999_990 + index), "Name": "Whole project"}
        milestone.update(Opportunity__c=deal_id, Amount__c=str(fee - short), Status__c="Planned")
        firm.salesforce["Milestone__c"].append(milestone)
    if entities if every_way is None else every_way:
        from closeloop.devtools.demo.billing import sell_every_way

        sell_every_way(firm, items)
    firm.consultants = [
        {
            "id": seed * 1000 + n + 1,
            "first_name": FIRST[n % len(FIRST)],
            "last_name": LAST[(n * 7) % len(LAST)],
            "email": f"consultant{n + 1}.{seed}@northwind.example",
            "roles": [sorted(ROLES)[n % len(ROLES)]],
        }
        for n in range(consultants)
    ]
    return firm


def fee_of(deal_id: str, items: list[dict[str, Any]]) -> Decimal:
    """A deal's amount as the CRM rolls it up: the sum of its line items' totals."""
    return sum(
        (
            Decimal(str(i["Quantity"])) * Decimal(i["UnitPrice"])
            for i in items
            if i["OpportunityId"] == deal_id
        ),
        Decimal(0),
    )


def _country(account: dict[str, Any]) -> str:
    """The ISO code of the account's billing country (DE when it has none)."""
    return _CODE_OF_NAME.get(str(account.get("BillingCountry")), "DE")


def _seller(account: dict[str, Any], n: int, clients: int, entities: bool) -> tuple[str, str]:
    """The entity selling deal ``n`` of ``account`` and the deal's currency: the default of
    the account's country, except a US client's second deal, sold by the GmbH in USD (an
    export outside the EU's VAT area); ``clients``: how many accounts the firm has."""
    if not entities:
        return "", "EUR"
    country = _country(account)
    if country == "US" and n >= clients:
        return "DE-GMBH", "USD"
    return SELLS[country]


def _acquire(
    firm: Firm, accounts: list[dict[str, Any]], opportunities: list[dict[str, Any]]
) -> None:
    """The acquired unit (:data:`ACQUIRED`, a UK company the group bought, invoicing in GBP
    from its own ERP) takes every second UK client whose deals are all sound (none blocked,
    held, closed by finance or waiting for a rate): their deals name it on the opportunity,
    and the clients its ERP knows move from the group's ERP's customers to its own (but the
    last one's: a client won since the acquisition, new to its ERP)."""
    troubled = set(firm.blocked) | set(firm.no_rate) | set(firm.finance_closes)
    troubled |= {firm.needs_approval, *firm.short_plans}
    deals_of: dict[str, list[dict[str, Any]]] = {}
    for deal in opportunities:
        deals_of.setdefault(deal["AccountId"], []).append(deal)
    sound = [
        a
        for a in accounts
        if a.get("BillingCountry") == COUNTRIES["GB"][0]
        and deals_of.get(a["Id"])
        and all(
            d["Id"] not in troubled and firm.deals[d["Id"]]["entity"] == SELLS["GB"][0]
            for d in deals_of[a["Id"]]
        )
    ]
    taken = [a["Id"] for a in sound[::2]]
    for deal in (d for a in taken for d in deals_of[a]):
        deal["Legal_Entity__c"] = ACQUIRED
        firm.deals[deal["Id"]]["entity"] = ACQUIRED
        firm.acquired.add(deal["Id"])
    known = taken[:-1] if len(taken) > 1 else taken  # the last: won since, new to its ERP
    firm.acquired_customers = [c for c in firm.erp_customers if c["account"] in known]
    firm.erp_customers = [c for c in firm.erp_customers if c["account"] not in taken]
    for account in set(taken) - set(known):
        firm.matches.pop(account, None)


def _bad_accounts(firm: Firm, accounts: list[dict[str, Any]], clients: int, entities: bool) -> None:
    """Accounts with missing or invalid data (each has one deal: the last ones). With
    entities, the account without a tax id is French and buys from the German GmbH: reverse
    charge needs its VAT number (one company alone needs every account's tax id)."""
    no_tax_id = "tax treatment undecided" if entities else "tax id is missing"
    broken = {
        clients - 1: ("Tax_Id__c", None, no_tax_id),
        clients - 2: ("BillingCountry", None, "billing country is missing"),
    }
    if entities:
        french = accounts[clients - 1]
        french.update(BillingCountry="France", BillingCity="Paris", BillingPostalCode="75002")
        french["CurrencyIsoCode"] = "EUR"
    for index, (name, value, reason) in broken.items():
        accounts[index][name] = value
        firm.blocked[accounts[index]["Id"]] = reason
        firm.matches.pop(accounts[index]["Id"], None)
    invalid = accounts[clients - 3]  # a German client whose VAT number has a typo
    number = tax_id("DE", random.Random(clients))
    invalid.update(BillingCountry="Germany", BillingCity="Berlin", BillingPostalCode="10115")
    invalid["Tax_Id__c"] = number[:-1] + str((int(number[-1]) + 1) % 10)
    firm.blocked[invalid["Id"]] = "is not valid"
    firm.matches.pop(invalid["Id"], None)


def _bad_deals(
    firm: Firm, opportunities: list[dict[str, Any]], items: list[dict[str, Any]], entities: bool
) -> None:
    """A deal without a start date, one whose fixed fee's milestone plan does not add up to
    the fee, one waiting for finance approval, and two whose ERP projects finance closes part
    way; with entities, one naming an entity that
    does not exist, a US Inc deal in EUR (it invoices in USD only), and a UK client sold by
    the GmbH in GBP (no GBP rate in the ERP: its invoices wait for one)."""
    free = [o for o in opportunities if o["Id"] not in firm.blocked]
    # with entities, the GmbH's euro deals carry these cases when there are enough of them:
    # the other entities and currencies keep their deals
    euro = [o for o in free if firm.deals[o["Id"]]["currency"] == "EUR"]
    usual = euro if entities and len(euro) >= 8 else free
    if len(usual) < 8:
        raise ValueError("the firm needs at least 8 deals with sound accounts")
    undated, fixed_fee, pending, *closing = (
        usual[round(i * (len(usual) - 1) / 15)] for i in (3, 5, 8, 10, 14)
    )
    if entities:
        chosen = (undated, fixed_fee, pending, *closing)
        _entity_cases(firm, [o for o in free if o not in chosen], items)
    undated["Start_Date__c"] = None
    firm.blocked[undated["Id"]] = "start date is missing"
    fixed_fee["Billing_Method__c"] = "Fixed Fee"  # its plan: one milestone, short of the fee
    firm.short_plans[fixed_fee["Id"]] = Decimal(1000)
    firm.blocked[fixed_fee["Id"]] = "the milestone plan adds up to"
    pending["Finance_Approval__c"] = "Pending"
    firm.needs_approval = pending["Id"]
    for deal in closing:
        begin = firm.deals[deal["Id"]]["start"]
        firm.finance_closes[deal["Id"]] = begin + (firm.end - begin) // 2
    for account_id in list(firm.blocked):
        if account_id.startswith("001"):
            del firm.blocked[account_id]


def _entity_cases(firm: Firm, free: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Deals whose entity or currency is wrong, and one in a currency without a rate."""

    def spare(entity: str, currency: str) -> dict[str, Any] | None:
        """The first of the entity's deals in ``currency`` when it has another one."""
        deals = [
            o
            for o in free
            if (firm.deals[o["Id"]]["entity"], firm.deals[o["Id"]]["currency"])
            == (entity, currency)
        ]
        return deals[0] if len(deals) > 1 else None

    if (unknown := spare("DE-GMBH", "EUR")) is not None:
        unknown["Legal_Entity__c"] = "NW-FR"
        firm.blocked[unknown["Id"]] = "'NW-FR' is not configured"
    if (euro_inc := spare("US-INC", "USD")) is not None:
        _recurrency(firm, euro_inc, items, "US-INC", "EUR")
        firm.blocked[euro_inc["Id"]] = "US-INC cannot invoice in EUR"
    if (pound := spare("GB-LTD", "GBP")) is not None:
        _recurrency(firm, pound, items, "DE-GMBH", "GBP")
        firm.no_rate[pound["Id"]] = "GBP"


def _recurrency(
    firm: Firm, deal: dict[str, Any], items: list[dict[str, Any]], entity: str, currency: str
) -> None:
    """Sell ``deal`` through ``entity`` in ``currency`` (its line items re-priced)."""
    info = firm.deals[deal["Id"]]
    deal["Legal_Entity__c"] = entity
    deal["CurrencyIsoCode"] = currency
    info.update(entity=entity, currency=currency)
    info["rates"] = {
        r: (ROLES[r] * PRICE_LEVEL[currency]).quantize(Decimal(1)) for r in info["roles"]
    }
    for item in items:
        if item["OpportunityId"] == deal["Id"]:
            item["UnitPrice"] = str(info["rates"][item["Role__c"]])
            item["CurrencyIsoCode"] = currency


def time_entries(
    firm: Firm, projects: dict[str, dict[str, Any]], seed: int = 11
) -> list[dict[str, Any]]:
    """Harvest time entries (seed shape) for the mobilized ``projects`` (by deal id:
    ``{"id", "tasks": {role: task id}}``): each role's consultant logs most working days from
    the deal's start to the end of the quarter."""
    rng = random.Random(seed)
    by_role: dict[str, list[dict[str, Any]]] = {}
    for person in firm.consultants:
        by_role.setdefault(person["roles"][0], []).append(person)
    entries = []
    for deal_id, project in sorted(projects.items()):
        begin = firm.deals[deal_id]["start"]
        for role, task_id in sorted(project["tasks"].items()):
            person = rng.choice(by_role[role])
            day = begin
            while day <= firm.end:
                if day.weekday() < 5 and rng.random() < 0.45:
                    entries.append(
                        {
                            "user_id": person["id"],
                            "project_id": project["id"],
                            "task_id": task_id,
                            "spent_date": day.isoformat(),
                            "hours": rng.choice((2.0, 4.0, 6.0, 7.5, 8.0)),
                            "notes": f"{role} work for {firm.deals[deal_id]['account']}",
                        }
                    )
                day += timedelta(days=1)
    return entries
