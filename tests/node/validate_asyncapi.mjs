// Parse AsyncAPI documents with the official parser (@asyncapi/parser) and report their diagnostics.
//
// Usage: node validate_asyncapi.mjs DOCUMENT.json [DOCUMENT.json ...]
// Prints every diagnostic as "SEVERITY CODE at PATH: MESSAGE (FILE)" on stderr, and for each
// valid document one line on stdout. Exits 1 when any document has an error-severity
// diagnostic or cannot be parsed at all, 0 otherwise; warnings and hints are printed, not
// fatal. The parser checks a document's structure, bindings and references (those inside the
// payloads included); it does not check a payload written in JSON Schema draft 2020-12
// against that dialect: the Python tests do.
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error('usage: node validate_asyncapi.mjs DOCUMENT.json [DOCUMENT.json ...]');
  process.exit(2);
}

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'information',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
let failed = 0;
for (const path of paths) {
  const { document, diagnostics } = await parser.parse(await readFile(path, 'utf8'), { source: path });
  for (const d of diagnostics) {
    console.error(`${SEVERITY[d.severity] ?? d.severity} ${d.code} at /${d.path.join('/')}: ${d.message} (${path})`);
  }
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
  if (errors > 0 || document === undefined) {
    console.error(`${path}: ${errors} error(s); not a valid AsyncAPI document`);
    failed += 1;
  } else {
    console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations`);
  }
}
process.exit(failed > 0 ? 1 : 0);
