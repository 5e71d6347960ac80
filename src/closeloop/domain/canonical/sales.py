"""Opportunities, rate cards, billing plans and engagements (the sold work)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from closeloop.domain.canonical.base import Canonical, CurrencyCode, Quantity, Ref
from closeloop.domain.money import Money


class OpportunityStage(StrEnum):
    """Canonical sales stages; CRM picklists map onto these with a value map."""

    PROSPECTING = "prospecting"
    QUALIFICATION = "qualification"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


class BillingMethod(StrEnum):
    """How the work is billed."""

    TIME_AND_MATERIALS = "time_and_materials"
    FIXED_FEE = "fixed_fee"
    MILESTONE = "milestone"
    RETAINER = "retainer"


class FinanceApproval(StrEnum):
    """Whether finance must approve the deal before its time may be billed."""

    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class RoleRate(Canonical):
    """An hourly rate for a role."""

    CANONICAL_TYPE = "role_rate"
    role: str = Field(min_length=1)
    hourly_rate: Money


class RateCard(Canonical):
    """Hourly rates by role, all in one currency."""

    CANONICAL_TYPE = "rate_card"
    name: str = Field(min_length=1)
    currency: CurrencyCode
    rates: tuple[RoleRate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_currency(self) -> RateCard:
        other = sorted({r.hourly_rate.currency for r in self.rates} - {self.currency})
        if other:
            raise ValueError(f"rates in {', '.join(other)} on a {self.currency} rate card")
        roles = [r.role for r in self.rates]
        if len(roles) != len(set(roles)):
            raise ValueError("a role appears twice on the rate card")
        return self

    def rate_for(self, role: str) -> Money:
        """The hourly rate of ``role``; raises ``KeyError`` when the card has none."""
        for rate in self.rates:
            if rate.role == role:
                return rate.hourly_rate
        raise KeyError(f"rate card {self.name} has no rate for role {role!r}")


class MilestoneStatus(StrEnum):
    """Where a milestone of a fixed-fee deal stands with the client (the CRM's picklist)."""

    PLANNED = "planned"
    ACCEPTED = "accepted"
    DISPUTED = "disputed"


class DealMilestone(Canonical):
    """A milestone of a fixed-fee deal's plan as the CRM holds it (in the Salesforce sandbox
    the ``Milestone__c`` child of the opportunity): its CRM id, name, ``amount`` or
    ``share_percent`` of the fee (one of them), planned date and status."""

    CANONICAL_TYPE = "deal_milestone"
    crm_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    amount: Decimal | None = None
    share_percent: Decimal | None = Field(default=None, ge=0, le=100)
    planned_date: date | None = None
    status: MilestoneStatus = MilestoneStatus.PLANNED


class UnusedHours(StrEnum):
    """What happens to a retainer period's included hours not used."""

    EXPIRE = "expire"
    ROLL_OVER = "roll_over"


class RetainerTerms(Canonical):
    """A retainer deal's terms: ``amount_per_period`` (in the deal's currency) invoiced at
    the start of each billing period for ``included_hours``; hours beyond them billed at the
    rate card at the period's end; unused hours expire or roll over to the next period."""

    CANONICAL_TYPE = "retainer_terms"
    amount_per_period: Decimal = Field(gt=0)
    included_hours: Quantity = Decimal(0)
    unused_hours: UnusedHours = UnusedHours.EXPIRE


class OpportunityLineItem(Canonical):
    """A sold service: a role for a number of hours at a unit price."""

    CANONICAL_TYPE = "opportunity_line_item"
    service: str = Field(min_length=1)
    role: str | None = None
    quantity_hours: Quantity
    unit_price: Money


class DealCustomer(Canonical):
    """The customer as the CRM holds it on a deal: taken as it is (a deal with a wrong tax id
    is still a deal); mobilization checks it before the customer reaches the ERP."""

    CANONICAL_TYPE = "deal_customer"
    SCHEMA_VERSION = 2
    crm_id: str | None = None
    legal_name: str | None = None
    country: str | None = Field(default=None, description="as typed in the CRM, mapped to ISO")
    tax_id: str | None = None
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    currency: str | None = None
    payment_terms_days: int | None = Field(default=None, ge=0, le=366)


class Opportunity(Canonical):
    """A deal in the CRM. ``won`` is true only at the closed-won stage; ``customer`` is the
    account's commercial data as the CRM holds it (version 2); ``legal_entity`` (version
    3): the code of the firm's company that sells it (``legal_entities:`` of the
    configuration). Version 4 adds the billing terms of the methods other than time and
    materials: a fixed-fee deal's fee is its ``amount`` and its plan is ``milestones``; a
    retainer deal has ``retainer`` terms; ``expense_markup_percent`` is added to the
    re-billed expenses of any deal (none: billed at cost); ``amendment_effective_date``:
    the day the changes of this version take effect (rates), when a mobilized deal is
    amended (none: the day of the version); ``end_date``: when the engagement ends."""

    CANONICAL_TYPE = "opportunity"
    SCHEMA_VERSION = 4
    name: str = Field(min_length=1)
    account: Ref
    stage: OpportunityStage
    won: bool = False
    close_date: date
    amount: Money | None = None
    owner: str | None = None
    billing_method: BillingMethod | None = None
    finance_approval: FinanceApproval = FinanceApproval.NOT_REQUIRED
    start_date: date | None = None
    sow_reference: str | None = None
    rate_card: RateCard | None = None
    line_items: tuple[OpportunityLineItem, ...] = ()
    customer: DealCustomer | None = None
    legal_entity: str | None = None
    milestones: tuple[DealMilestone, ...] = ()
    retainer: RetainerTerms | None = None
    expense_markup_percent: Decimal | None = Field(default=None, ge=0, le=1000)
    amendment_effective_date: date | None = None
    end_date: date | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Opportunity:
        if self.won != (self.stage is OpportunityStage.CLOSED_WON):
            raise ValueError(f"won is {self.won} but the stage is {self.stage.value}")
        currencies = {i.unit_price.currency for i in self.line_items}
        if self.amount is not None:
            currencies.add(self.amount.currency)
        if len(currencies) > 1:
            raise ValueError(f"amounts in several currencies: {', '.join(sorted(currencies))}")
        return self


class TimeAndMaterialsPlan(Canonical):
    """Bill approved hours at the rate card's rates."""

    CANONICAL_TYPE = "billing_plan_time_and_materials"
    method: Literal["time_and_materials"] = "time_and_materials"
    rate_card: RateCard
    budget: Money | None = None


class MilestonePlanItem(Canonical):
    """A fixed-fee milestone: billed when reached."""

    CANONICAL_TYPE = "billing_plan_milestone"
    name: str = Field(min_length=1)
    amount: Money
    due_date: date | None = None


class FixedFeePlan(Canonical):
    """A fixed fee, billed by milestones that add up to it."""

    CANONICAL_TYPE = "billing_plan_fixed_fee"
    method: Literal["fixed_fee"] = "fixed_fee"
    fee: Money
    milestones: tuple[MilestonePlanItem, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _milestones_add_up(self) -> FixedFeePlan:
        total = sum((m.amount.amount for m in self.milestones), start=self.fee.amount * 0)
        if {m.amount.currency for m in self.milestones} != {self.fee.currency}:
            raise ValueError("milestones must be in the fee's currency")
        if total != self.fee.amount:
            raise ValueError(f"milestones add up to {total}, the fee is {self.fee.amount}")
        return self


class RetainerPlan(Canonical):
    """A fixed amount every period, optionally with hours included."""

    CANONICAL_TYPE = "billing_plan_retainer"
    method: Literal["retainer"] = "retainer"
    amount_per_period: Money
    period: Literal["monthly", "quarterly"] = "monthly"
    included_hours: Quantity | None = None


BillingPlan = Annotated[
    TimeAndMaterialsPlan | FixedFeePlan | RetainerPlan, Field(discriminator="method")
]


class Engagement(Canonical):
    """The sold work: a closed-won opportunity with its statement of work and billing plan."""

    CANONICAL_TYPE = "engagement"
    opportunity: Ref
    account: Ref
    name: str = Field(min_length=1)
    sow_reference: str | None = None
    billing_plan: BillingPlan
    start_date: date
    end_date: date | None = None

    @model_validator(mode="after")
    def _dates(self) -> Engagement:
        if self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self
