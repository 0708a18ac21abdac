"""XMP metadata of a PDF (``pikepdf.Pdf``): descriptions added to its ``rdf:RDF`` packet, kept
uncompressed (PDF/A-1 requires it), and the Factur-X extension schema."""

from __future__ import annotations

from typing import Any

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
FX = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
_EXT = "http://www.aiim.org/pdfa/ns/extension/"
_SCHEMA = "http://www.aiim.org/pdfa/ns/schema#"
_PROP = "http://www.aiim.org/pdfa/ns/property#"
_EMPTY = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
          b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="' + RDF.encode()
          + b'"/></x:xmpmeta><?xpacket end="w"?>')

#: The Factur-X properties and their descriptions (Factur-X 1.07, PDF/A extension schema).
_FX_PROPERTIES = {
    "DocumentFileName": "The name of the embedded XML document",
    "DocumentType": "The type of the hybrid document in capital letters, e.g. INVOICE",
    "Version": "The actual version of the standard applying to the embedded XML document",
    "ConformanceLevel": "The conformance level of the embedded XML document",
}


def add_descriptions(pdf: Any, descriptions: list[Any]) -> None:
    """Append ``rdf:Description`` elements (lxml) to the XMP packet of ``pdf`` (made if
    missing) and write it back as an uncompressed metadata stream."""
    import pikepdf
    from lxml import etree

    stream = pdf.Root.get("/Metadata")
    raw = stream.read_bytes() if stream is not None else _EMPTY
    parser = etree.XMLParser(remove_blank_text=False, resolve_entities=False, no_network=True)
    # The packet is the xmpmeta element between two xpacket processing instructions.
    start, end = raw.find(b"<x:xmpmeta"), raw.rfind(b"</x:xmpmeta>")
    body = raw[start:end + len(b"</x:xmpmeta>")] if start >= 0 and end > start else raw
    root = etree.fromstring(body, parser)
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f"{{{RDF}}}RDF")
    if rdf is None:
        rdf = etree.SubElement(root, f"{{{RDF}}}RDF")
    for description in descriptions:
        rdf.append(description)
    packet = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
              + etree.tostring(root, encoding="utf-8") + b'\n<?xpacket end="w"?>')
    pdf.Root.Metadata = pdf.make_stream(packet, Type=pikepdf.Name.Metadata,
                                        Subtype=pikepdf.Name.XML)


def facturx_descriptions(conformance: str, filename: str = "factur-x.xml") -> list[Any]:
    """The ``fx:`` properties of a Factur-X invoice and the PDF/A extension schema that
    declares them (PDF/A requires every non-standard XMP property to be declared)."""
    from lxml import etree

    nsmap = {"rdf": RDF, "fx": FX}
    values = etree.Element(f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""}, nsmap=nsmap)
    for name, text in (("DocumentType", "INVOICE"), ("DocumentFileName", filename),
                       ("Version", "1.0"), ("ConformanceLevel", conformance)):
        etree.SubElement(values, f"{{{FX}}}{name}").text = text

    ext_ns = {"rdf": RDF, "pdfaExtension": _EXT, "pdfaSchema": _SCHEMA, "pdfaProperty": _PROP}
    schema = etree.Element(f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""}, nsmap=ext_ns)
    bag = etree.SubElement(etree.SubElement(schema, f"{{{_EXT}}}schemas"), f"{{{RDF}}}Bag")
    item = etree.SubElement(bag, f"{{{RDF}}}li", {f"{{{RDF}}}parseType": "Resource"})
    etree.SubElement(item, f"{{{_SCHEMA}}}schema").text = "Factur-X PDFA Extension Schema"
    etree.SubElement(item, f"{{{_SCHEMA}}}namespaceURI").text = FX
    etree.SubElement(item, f"{{{_SCHEMA}}}prefix").text = "fx"
    seq = etree.SubElement(etree.SubElement(item, f"{{{_SCHEMA}}}property"), f"{{{RDF}}}Seq")
    for name, text in _FX_PROPERTIES.items():
        prop = etree.SubElement(seq, f"{{{RDF}}}li", {f"{{{RDF}}}parseType": "Resource"})
        etree.SubElement(prop, f"{{{_PROP}}}name").text = name
        etree.SubElement(prop, f"{{{_PROP}}}valueType").text = "Text"
        etree.SubElement(prop, f"{{{_PROP}}}category").text = "external"
        etree.SubElement(prop, f"{{{_PROP}}}description").text = text
    return [schema, values]


def sync_from_docinfo(pdf: Any, language: str | None) -> None:
    """Make the XMP packet say what the document information dictionary says (title,
    author, subject, keywords, creator, producer), and the language."""
    with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as meta:
        meta.load_from_docinfo(pdf.docinfo)
        if language:
            meta["dc:language"] = [language]
