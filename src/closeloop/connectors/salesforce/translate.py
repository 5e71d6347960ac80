"""The ``crm`` role's canonical operations as Salesforce record updates.

The hub's custom fields (declared in the sandbox's schema, ``sandboxes/salesforce/
schema.yaml``; an org installs them with the hub): on the opportunity, where its mobilization
stands (``Mobilization_Status__c``, ``Mobilization_Message__c``, ``ERP_Customer_Id__c``,
``PSA_Project_Id__c``, ``ERP_Project_Id__c``); on the opportunity and its account, the ERP's
invoicing totals (``Invoiced_Amount__c``, ``Paid_Amount__c``, ``Outstanding_Amount__c``,
``Overdue_Amount__c``, ``Days_Past_Due__c``, ``Last_Invoice_Number__c``,
``Payment_Status__c``), in the record's currency (a multi-currency org keeps each record's
currency fields in its ``CurrencyIsoCode``), and on the account every currency's totals in
``Billing_By_Currency__c`` (1,000 characters). Currency fields are numbers in
Salesforce's REST API (JSON numbers: the Decimal goes out as a float of at most 18 digits).
"""

from __future__ import annotations

from typing import Any

from closeloop.domain.commands import Command
from closeloop.domain.operations import UpdateBillingTotals, UpdateEngagement

SOBJECTS = {"opportunity": "Opportunity", "account": "Account"}
"""The sObject of each canonical record the CRM operations write."""

MESSAGE_LENGTH = 1000
"""``Mobilization_Message__c`` is a text field of 1,000 characters (the schema's length)."""


def native(command: Command) -> tuple[str, dict[str, Any]]:
    """``(operation, payload)`` in the connector's own terms (``update`` with ``{"object",
    "id", "fields"}``) for a canonical CRM operation; Salesforce's own ``update`` and
    ``upsert`` as they are. Raises ``ValueError`` for a payload that does not fit."""
    if command.operation == UpdateEngagement.operation:
        update = UpdateEngagement.model_validate(command.payload)
        fields: dict[str, Any] = {
            "Mobilization_Status__c": update.status,
            "Mobilization_Message__c": update.message[:MESSAGE_LENGTH],
        }
        optional = {
            "ERP_Customer_Id__c": update.customer_code,
            "PSA_Project_Id__c": update.psa_project_id,
            "ERP_Project_Id__c": update.project_key,
        }
        fields.update({k: v for k, v in optional.items() if v is not None})
        return "update", {"object": "Opportunity", "id": update.deal_id, "fields": fields}
    if command.operation == UpdateBillingTotals.operation:
        totals = UpdateBillingTotals.model_validate(command.payload)
        fields = {
            "Invoiced_Amount__c": float(totals.invoiced),
            "Paid_Amount__c": float(totals.paid),
            "Outstanding_Amount__c": float(totals.outstanding),
            "Overdue_Amount__c": float(totals.overdue),
            "Days_Past_Due__c": totals.days_past_due,
            "Last_Invoice_Number__c": totals.last_invoice_number,
            "Payment_Status__c": totals.payment_status,
        }
        if totals.record == "account":
            fields["Billing_By_Currency__c"] = totals.by_currency[:MESSAGE_LENGTH]
        payload = {"object": SOBJECTS[totals.record], "id": totals.record_id, "fields": fields}
        return "update", payload
    return command.operation, command.payload


def key_sobject(operation: str, key: str) -> str:
    """The sObject a command's idempotency key (``operation`` and the rest ``key``) wrote:
    a canonical operation's key starts with the canonical record (``opportunity:<id>:...``),
    Salesforce's own ``update``/``upsert`` keys with the sObject (``Opportunity:...``)."""
    if operation in (UpdateEngagement.operation, UpdateBillingTotals.operation):
        return SOBJECTS[key.split(":", 1)[0]]
    return operation
