"""Fidelity measurement, pre-migration risk scan, aggregation and report rendering.

- fidelity: one conversion's fidelity record (tiers: structure, package, visual), and the
  `assess(result)` callback `umstieg convert` hands to the tree conversion;
- wordprocessing, spreadsheets, presentations, legacy: readers that measure a document (OOXML,
  ODF, Office 97-2003 binaries, RTF) into `facts.Facts`; compare: checks and deductions;
  scoring: weights, thresholds, verdicts; text: word multisets; visual: page images and SSIM;
- risk: risk flags of one file; scan: the read-only scan of a tree;
- batch and html: tables (CSV, ODS) and self-contained HTML reports of a batch and of a scan;
  migration: run, status and assessment reports of a department from its ledger; dashboard: what
  the dashboard's pages show; package: safe reading of OOXML and ODF package parts;
- i18n: German, English and French (the catalogs in locale/, the Jinja templates in templates/,
  the human names of recorded codes), shared with the dashboard; exports: tables in a reader's
  language, CSV cells that start no formula.

reports imports core and parts of converters (formats, sniff, odf, result); converters never
import reports: the command passes fidelity in as a callback, and rendering in as a function.
"""
