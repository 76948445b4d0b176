import Foundation
import Testing
@testable import ProvisionModel

/// A dataset every product case below can read.
private let ordersDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: orders, owner: sales}
    spec:
      topic: orders
      key: order_id
      time: placed_at
      schema: {order_id: string, customer_id: string, amount: decimal, region: string, placed_at: timestamp, items: integer, address: {city: string}}
    """

/// Builds a product document around a spec body, so each case states only what it breaks.
private func product(_ specBody: String, name: String = "eu-orders") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: risk}
    spec:
    \(specBody)
    """
}

private let validSink = "  sink: {file: {path: eu/orders.jsonl}}"

struct InvalidSpecCase: CustomTestStringConvertible, Sendable {
    var name: String
    var yaml: String
    /// `line:column: path: message`, exactly as the author sees it.
    var expected: String

    var testDescription: String { name }
}

/// Datasets the join cases join: a table (customers) and a stream without a key (payments).
private let joinedDatasets = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: customers, owner: crm}
    spec: {topic: customers, key: customer_id, schema: {customer_id: string, name: string, tier: string}}
    ---
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: payments, owner: finance}
    spec: {topic: payments, time: paid_at, schema: {payment_id: string, order_id: integer, customer_id: string, paid_at: timestamp}}
    """

private let invalidCases: [InvalidSpecCase] = [
    .init(name: "join on a field the source lacks",
          yaml: product("  from: orders\n  join:\n    - {dataset: customers, on: customer, as: customer}\n" + validSink),
          expected: "7:32: spec.join[0].on: unknown field 'customer' in dataset 'orders'"),
    .init(name: "join an unknown dataset",
          yaml: product("  from: orders\n  join:\n    - {dataset: customer, on: customer_id, as: customer}\n" + validSink),
          expected: "7:17: spec.join[0].dataset: unknown dataset 'customer' (did you mean 'customers'?)"),
    .init(name: "join fields of different types",
          yaml: product("  from: orders\n  join:\n    - {dataset: payments, on: order_id, within: 1h, as: payment}\n" + validSink),
          expected: "7:31: spec.join[0].on: 'orders.order_id' is a string but 'payments.order_id' is a integer; joined fields must have the same type"),
    .init(name: "a table join needs a key",
          yaml: product("  from: orders\n  join:\n    - {dataset: payments, on: customer_id, as: payment}\n" + validSink),
          expected: "7:17: spec.join[0].dataset: dataset 'payments' has no key, so it cannot be joined as a table (a windowed join needs 'within')"),
    .init(name: "a windowed join takes no mode",
          yaml: product("  from: orders\n  join:\n    - {dataset: payments, on: customer_id, within: 1h, mode: latest, as: p}\n" + validSink),
          expected: "7:62: spec.join[0].mode: a windowed join ('within') joins events, not table rows; it takes no mode"),
    .init(name: "join type",
          yaml: product("  from: orders\n  join:\n    - {dataset: customers, on: customer_id, as: c, type: outer}\n" + validSink),
          expected: "7:58: spec.join[0].type: unknown join type 'outer' (expected 'inner' or 'left')"),
    .init(name: "two joins with one name",
          yaml: product("  from: orders\n  join:\n    - {dataset: customers, on: customer_id, as: c}\n    - {dataset: payments, on: customer_id, within: 1h, as: c}\n" + validSink),
          expected: "8:7: spec.join[1].as: 'c' names two joins; each join needs its own 'as'"),
    .init(name: "a joined field that does not exist",
          yaml: product("  from: orders\n  join:\n    - {dataset: customers, on: customer_id, as: customer}\n  select: {who: customer.nme}\n" + validSink),
          expected: "8:17: spec.select.who: unknown field 'nme' in 'customer' (did you mean 'name'?)"),
    .init(name: "a joined field of the wrong type",
          yaml: product("  from: orders\n  join:\n    - {dataset: customers, on: customer_id, as: customer}\n  where: customer.tier > 5\n" + validSink),
          expected: "8:24: spec.where: cannot compare string with integer using '>'"),
    .init(name: "unknown field in where, with suggestion",
          yaml: product("  from: orders\n  where: amout > 1000\n" + validSink),
          expected: "6:10: spec.where: unknown field 'amout' in dataset 'orders' (did you mean 'amount'?)"),
    .init(name: "unknown top-level field",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspecs: {}\n",
          expected: "4:1: specs: unknown field 'specs' (did you mean 'spec'?)"),
    .init(name: "missing kind",
          yaml: "apiVersion: provision/v1\nmetadata: {name: x}\nspec: {}\n",
          expected: "1:1: kind: missing required field 'kind'"),
    .init(name: "wrong apiVersion",
          yaml: "apiVersion: provision/v2\nkind: Dataset\nmetadata: {name: x}\nspec: {schema: {a: string}}\n",
          expected: "1:13: apiVersion: unsupported apiVersion 'provision/v2' (expected 'provision/v1')"),
    .init(name: "unknown kind with suggestion",
          yaml: "apiVersion: provision/v1\nkind: DataProdukt\nmetadata: {name: x}\nspec: {}\n",
          expected: "2:7: kind: unknown kind 'DataProdukt' (did you mean 'DataProduct'?)"),
    .init(name: "missing metadata",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nspec: {schema: {a: string}}\n",
          expected: "1:1: metadata: missing required field 'metadata'"),
    .init(name: "invalid name",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: EU_Orders}\nspec: {schema: {a: string}}\n",
          expected: "3:18: metadata.name: name 'EU_Orders' must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"),
    .init(name: "unknown metadata field",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x, tam: risk}\nspec: {schema: {a: string}}\n",
          expected: "3:21: metadata.tam: unknown field 'tam' (did you mean 'team'?)"),
    .init(name: "metadata not a mapping",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: orders\nspec: {schema: {a: string}}\n",
          expected: "3:11: metadata: expected a mapping, found 'orders'"),
    .init(name: "dataset missing schema",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec: {topic: x}\n",
          expected: "4:7: spec.schema: missing required field 'schema'"),
    .init(name: "unknown schema type with suggestion",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  schema: {a: strng}\n",
          expected: "5:15: spec.schema.a: unknown type 'strng' (did you mean 'string'?)"),
    .init(name: "dataset key not in schema",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  key: id\n  schema: {order_id: string}\n",
          expected: "5:8: spec.key: unknown field 'id' in dataset 'x'"),
    .init(name: "time field is not a timestamp",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  time: amount\n  schema: {amount: decimal}\n",
          expected: "5:9: spec.time: the time field 'amount' is a decimal; it must be a timestamp"),
    .init(name: "invalid topic name",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  topic: _internal\n  schema: {a: string}\n",
          expected: "5:10: spec.topic: topic '_internal' must be letters, digits, '.', '_' or '-' and must not start with '_' or '.'"),
    .init(name: "empty schema",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  schema: {}\n",
          expected: "5:11: spec.schema: a schema needs at least one field"),
    .init(name: "unknown dataset with suggestion",
          yaml: product("  from: ordres\n" + validSink),
          expected: "5:9: spec.from: unknown dataset 'ordres' (did you mean 'orders'?)"),
    .init(name: "missing from",
          yaml: product(validSink),
          expected: "5:3: spec.from: missing required field 'from'"),
    .init(name: "missing sink",
          yaml: product("  from: orders\n"),
          expected: "5:3: spec.sink: missing required field 'sink'"),
    .init(name: "unknown field in spec with suggestion",
          yaml: product("  from: orders\n  filter: amount > 1\n" + validSink),
          expected: "6:3: spec.filter: unknown field 'filter'"),
    .init(name: "where is not boolean",
          yaml: product("  from: orders\n  where: amount + 1\n" + validSink),
          expected: "6:10: spec.where: where must be a boolean condition, found decimal"),
    .init(name: "type error in comparison",
          yaml: product("  from: orders\n  where: region > 10\n" + validSink),
          expected: "6:17: spec.where: cannot compare string with integer using '>'"),
    .init(name: "parse error points at column",
          yaml: product("  from: orders\n  where: amount > > 1\n" + validSink),
          expected: "6:19: spec.where: unexpected '>'"),
    .init(name: "single equals",
          yaml: product("  from: orders\n  where: region = \"EU\"\n" + validSink),
          expected: "6:17: spec.where: '=' is not an operator (use '==' to compare)"),
    .init(name: "quoted expression column accounts for the quote",
          yaml: product("  from: orders\n  where: \"regoin == 'EU'\"\n" + validSink),
          expected: "6:11: spec.where: unknown field 'regoin' in dataset 'orders' (did you mean 'region'?)"),
    .init(name: "unknown function",
          yaml: product("  from: orders\n  select: {r: lowr(region)}\n" + validSink),
          expected: "6:15: spec.select.r: unknown function 'lowr' (did you mean 'lower'?)"),
    .init(name: "unknown field in select",
          yaml: product("  from: orders\n  select:\n    id: order_id\n    total: amont\n" + validSink),
          expected: "8:12: spec.select.total: unknown field 'amont' in dataset 'orders' (did you mean 'amount'?)"),
    .init(name: "nested field that does not exist",
          yaml: product("  from: orders\n  where: address.town == \"Paris\"\n" + validSink),
          expected: "6:10: spec.where: unknown field 'town' in 'address'"),
    .init(name: "key not in output",
          yaml: product("  from: orders\n  select: {id: order_id}\n  key: order_id\n" + validSink),
          expected: "7:8: spec.key: key 'order_id' is not an output field"),
    .init(name: "unknown sink kind",
          yaml: product("  from: orders\n  sink: {s3: {bucket: x}}\n"),
          expected: "6:10: spec.sink.s3: unknown sink 's3' (supported: file, postgres, elasticsearch, webhook)"),
    .init(name: "two sink kinds",
          yaml: product("  from: orders\n  sink: {file: {path: a.jsonl}, webhook: {url: x}}\n"),
          expected: "6:9: spec.sink: a sink has exactly one kind, found file, webhook"),
    .init(name: "file path escapes the root",
          yaml: product("  from: orders\n  sink: {file: {path: ../../etc/passwd}}\n"),
          expected: "6:23: spec.sink.file.path: path '../../etc/passwd' must be relative and stay inside the server's file root"),
    .init(name: "absolute file path",
          yaml: product("  from: orders\n  sink: {file: {path: /tmp/x.jsonl}}\n"),
          expected: "6:23: spec.sink.file.path: path '/tmp/x.jsonl' must be relative and stay inside the server's file root"),
    .init(name: "unknown file format",
          yaml: product("  from: orders\n  sink: {file: {path: a.txt, format: parquet}}\n"),
          expected: "6:38: spec.sink.file.format: unknown format 'parquet' (expected 'jsonl' or 'csv')"),
    .init(name: "bad backfill duration",
          yaml: product("  from: orders\n  backfill: {since: 3 months}\n" + validSink),
          expected: "6:21: spec.backfill.since: '3 months' is not a duration (examples: 90d, 12h, 30m)"),
    .init(name: "backfill since and from together",
          yaml: product("  from: orders\n  backfill: {since: 90d, from: 2026-01-01T00:00:00Z}\n" + validSink),
          expected: "6:21: spec.backfill.since: use either 'since' or 'from'/'until', not both"),
    .init(name: "backfill until before from",
          yaml: product("  from: orders\n  backfill: {from: 2026-02-01T00:00:00Z, until: 2026-01-01T00:00:00Z}\n" + validSink),
          expected: "6:49: spec.backfill.until: 'until' must be after 'from'"),
    .init(name: "unknown deletion policy",
          yaml: product("  from: orders\n  deletionPolicy: Drop\n" + validSink),
          expected: "6:19: spec.deletionPolicy: unknown deletionPolicy 'Drop' (expected 'Retain' or 'Delete')"),
    .init(name: "select is a list",
          yaml: product("  from: orders\n  select: [order_id, amount]\n" + validSink),
          expected: "6:11: spec.select: expected a mapping of output field names to expressions, found a list"),
    .init(name: "comparison with null literal",
          yaml: product("  from: orders\n  where: region == null\n" + validSink),
          expected: "6:17: spec.where: comparing with null is always false; use 'is null' or 'is not null'"),
    .init(name: "string concatenation with plus",
          yaml: product("  from: orders\n  select: {label: region + order_id}\n" + validSink),
          expected: "6:26: spec.select.label: '+' does not join strings; use concat(a, b)"),
    .init(name: "postgres sink without a key",
          yaml: product("  from: orders\n  select: {id: order_id}\n  sink: {postgres: {url: \"${env:PG_URL}\", table: eu_orders}}\n"),
          expected: "7:20: spec.sink.postgres: a table needs a primary key: set spec.key to an output field"),
    .init(name: "postgres password in the spec",
          yaml: product("  from: orders\n  key: order_id\n  sink: {postgres: {url: \"postgres://app:secret@db/x\", table: t}}\n"),
          expected: "7:26: spec.sink.postgres.url: a password does not belong in a spec; use '${secret:NAME}'"),
    .init(name: "postgres password in the query",
          yaml: product("  from: orders\n  key: order_id\n  sink: {postgres: {url: \"postgres://db/x?user=app&password=secret\", table: t}}\n"),
          expected: "7:26: spec.sink.postgres.url: a password does not belong in a spec; use '${secret:NAME}'"),
    .init(name: "webhook token in the query",
          yaml: product("  from: orders\n  sink: {webhook: {url: \"https://hooks.example/x?token=abc\"}}\n"),
          expected: "6:25: spec.sink.webhook.url: a password does not belong in a spec; use '${secret:NAME}'"),
    .init(name: "webhook authorization header inline",
          yaml: product("  from: orders\n  sink: {webhook: {url: \"https://hooks.example/x\", headers: {Authorization: \"Bearer abc\"}}}\n"),
          expected: "6:77: spec.sink.webhook.headers.Authorization: a credential does not belong in a spec; use '${secret:NAME}'"),
    .init(name: "postgres table name",
          yaml: product("  from: orders\n  key: order_id\n  sink: {postgres: {url: \"${env:PG}\", table: Orders}}\n"),
          expected: "7:46: spec.sink.postgres.table: 'Orders' must be 1-63 lowercase letters, digits or '_', not starting with a digit"),
    .init(name: "elasticsearch sink without a key",
          yaml: product("  from: orders\n  select: {id: order_id}\n  sink: {elasticsearch: {url: \"${env:ES}\", index: orders}}\n"),
          expected: "7:25: spec.sink.elasticsearch: documents need ids: set spec.key to an output field"),
    .init(name: "elasticsearch password in the URL",
          yaml: product("  from: orders\n  key: order_id\n  sink: {elasticsearch: {url: \"http://u:p@es:9200\", index: orders}}\n"),
          expected: "7:31: spec.sink.elasticsearch.url: a password does not belong in a spec; use auth with '${secret:NAME}'"),
    .init(name: "elasticsearch credentials in the spec",
          yaml: product("  from: orders\n  key: order_id\n  sink: {elasticsearch: {url: \"http://es:9200\", index: orders, auth: {basic: \"u:p\"}}}\n"),
          expected: "7:78: spec.sink.elasticsearch.auth.basic: credentials do not belong in a spec; use '${secret:NAME}'"),
    .init(name: "elasticsearch index name",
          yaml: product("  from: orders\n  key: order_id\n  sink: {elasticsearch: {url: \"${env:ES}\", index: _Orders}}\n"),
          expected: "7:51: spec.sink.elasticsearch.index: '_Orders' must be lowercase letters, digits, '-' or '_', start with a letter or digit, at most 200 bytes"),
    .init(name: "elasticsearch full text on a number",
          yaml: product("  from: orders\n  key: order_id\n  sink: {elasticsearch: {url: \"${env:ES}\", index: orders, text: [amount]}}\n"),
          expected: "7:65: spec.sink.elasticsearch.text: 'amount' is not a string; only string fields can be full text"),
    .init(name: "webhook secret in the spec",
          yaml: product("  from: orders\n  sink: {webhook: {url: \"http://fn:8080/x\", secret: s3cret}}\n"),
          expected: "6:53: spec.sink.webhook.secret: a secret does not belong in a spec; use '${secret:NAME}'"),
    .init(name: "webhook batch size",
          yaml: product("  from: orders\n  sink: {webhook: {url: \"${env:FN}\", batch: {maxBytes: lots}}}\n"),
          expected: "6:56: spec.sink.webhook.batch.maxBytes: 'lots' is not a size (examples: 65536, 64KiB, 1MiB)"),
    .init(name: "invalid YAML",
          yaml: "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x\nspec: {}\n",
          expected: "4:5: invalid YAML: did not find expected ',' or '}'"),
]

@Suite struct SpecValidationTests {
    @Test(arguments: invalidCases)
    func invalidSpecIsRejectedWithLocation(_ testCase: InvalidSpecCase) {
        let result = SpecLoader.load([SpecFile(name: "catalog.yaml", content: ordersDataset),
                                      SpecFile(name: "joined.yaml", content: joinedDatasets),
                                      SpecFile(name: "specs/eu.yaml", content: testCase.yaml)])
        let described = result.errors.map { "\($0.line):\($0.column): \($0.path.isEmpty ? "" : $0.path + ": ")\($0.message)" }
        #expect(described.contains(testCase.expected), "all errors: \(described)")
        #expect(result.errors.first?.file == "specs/eu.yaml")
    }

    @Test func theMessageNamesFileLineColumnAndPath() {
        let result = SpecLoader.load([SpecFile(name: "catalog.yaml", content: ordersDataset),
                                      SpecFile(name: "specs/eu.yaml", content: product("  from: orders\n  where: amout > 1000\n" + validSink))])
        #expect(result.errors.map(\.description) == [
            "specs/eu.yaml:6:10: spec.where: unknown field 'amout' in dataset 'orders' (did you mean 'amount'?)",
        ])
    }

    @Test func everyErrorInAFileIsReported() {
        let yaml = product("  from: orders\n  where: amout > 1\n  deletionPolicy: Drop\n  sink: {file: {path: /abs}}\n")
        let result = SpecLoader.load([SpecFile(name: "catalog.yaml", content: ordersDataset), SpecFile(name: "p.yaml", content: yaml)])
        #expect(result.errors.count == 2)  // the where clause is checked only once the document parses
        #expect(result.errors.map(\.path) == ["spec.deletionPolicy", "spec.sink.file.path"])
    }

    @Test func duplicateNamesAreRejected() {
        let result = SpecLoader.load([SpecFile(name: "a.yaml", content: ordersDataset + "\n---\n" + ordersDataset)])
        #expect(result.errors.map(\.description) == ["a.yaml:10:1: metadata.name: Dataset 'orders' is defined twice (first at a.yaml:1)"])
    }

    @Test func aBareOnKeyIsAString() {
        // YAML 1.1 reads a bare `on` as a boolean; spec keys must stay strings.
        let yaml = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: x}\nspec:\n  schema: {on: string, yes: boolean}\n"
        let result = SpecLoader.load([SpecFile(name: "a.yaml", content: yaml)])
        #expect(result.errors.isEmpty)
        guard case .dataset(let dataset, _)? = result.documents.first else {
            Issue.record("no dataset parsed")
            return
        }
        #expect(dataset.spec.schema.fieldNames == ["on", "yes"])
    }

    @Test func productsMayReferenceTheExistingCatalog() throws {
        let catalog = SpecLoader.load([SpecFile(name: "c.yaml", content: ordersDataset)]).documents.compactMap { document -> Dataset? in
            if case .dataset(let dataset, _) = document { return dataset }
            return nil
        }
        let result = SpecLoader.load([SpecFile(name: "p.yaml", content: product("  from: orders\n" + validSink))], catalog: catalog)
        #expect(result.errors.isEmpty)
        #expect(result.documents.count == 1)
    }

    @Test func theExampleSpecsAllApply() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("specs")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 3)
        let files = try names.map { SpecFile(name: "specs/\($0)", content: try String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8)) }
        let result = SpecLoader.load(files)
        #expect(result.errors.map(\.description) == [])
        #expect(result.documents.filter { $0.kind == .dataProduct }.count >= 3)
    }

    @Test func joinStateKeepsOnlyTheJoinedFieldsExpressionsRead() throws {
        func plan(_ body: String) throws -> ProductPlan {
            let result = SpecLoader.load([SpecFile(name: "catalog.yaml", content: ordersDataset),
                                          SpecFile(name: "joined.yaml", content: joinedDatasets),
                                          SpecFile(name: "p.yaml", content: product(body))])
            #expect(result.errors.isEmpty, "\(result.errors)")
            var datasets: [String: Dataset] = [:]
            var products: [DataProduct] = []
            for document in result.documents {
                switch document {
                case .dataset(let dataset, _): datasets[dataset.name] = dataset
                case .dataProduct(let product, _): products.append(product)
                case .gitSource: break
                }
            }
            return try ProductPlan.compile(try #require(products.first), datasets: datasets)
        }
        let join = "  from: orders\n  join:\n    - {dataset: customers, on: customer_id, as: customer}\n"
        let named = try plan(join + "  where: customer.tier == \"gold\"\n  select: {id: order_id, who: customer.name}\n" + validSink)
        #expect(named.joins.first?.fieldsRead == ["name", "tier"])
        // Read whole: by a null test, or passed through without a select.
        #expect(try plan(join + "  where: customer is not null\n  select: {id: order_id, who: customer.name}\n" + validSink)
            .joins.first?.fieldsRead == nil)
        #expect(try plan(join + validSink).joins.first?.fieldsRead == nil)
    }

    @Test func filePathsNormalizeInsideTheRoot() {
        #expect(FilePaths.normalizedRelativePath("./eu//orders.jsonl") == "eu/orders.jsonl")
        #expect(FilePaths.normalizedRelativePath("a/../b.csv") == "b.csv")
        #expect(FilePaths.normalizedRelativePath("a/../../b.csv") == nil)
        #expect(FilePaths.normalizedRelativePath("/etc/passwd") == nil)
        #expect(FilePaths.normalizedRelativePath("..") == nil)
    }

    @Test func changingTheFilterRebuildsButChangingThePolicyDoesNot() {
        let base = DataProductSpec(from: "orders", filter: "amount > 1", sink: .file(.init(path: "a.jsonl", format: .jsonl)))
        var filtered = base
        filtered.filter = "amount > 2"
        var retained = base
        retained.deletionPolicy = .delete
        #expect(base.outputChange(to: filtered) == .rebuild)
        #expect(base.outputChange(to: retained) == .none)
    }

    @Test func onlyNewSelectFieldsExtendTheOutput() {
        let id = SelectField(name: "id", expression: "id"), amount = SelectField(name: "amount", expression: "amount")
        let base = DataProductSpec(from: "orders", select: [id, amount], key: "id",
                                   sink: .file(.init(path: "a.jsonl", format: .jsonl)))
        var added = base
        added.select = [id, SelectField(name: "country", expression: "country"), amount]
        var retyped = base
        retyped.select = [id, SelectField(name: "amount", expression: "amount * 100")]
        var addedAndFiltered = added
        addedAndFiltered.filter = "amount > 1"
        var removed = base
        removed.select = [id]
        #expect(base.outputChange(to: added) == .addsFields)
        #expect(base.outputChange(to: retyped) == .rebuild)
        #expect(base.outputChange(to: addedAndFiltered) == .rebuild)
        #expect(base.outputChange(to: removed) == .rebuild)
    }
}

@Suite struct PostgresURLTests {
    @Test func parsesTheParts() {
        #expect(PostgresURL.parse("postgres://app:s%40cret@db.internal:6543/sales?sslmode=disable")
            == PostgresURL.Parts(user: "app", password: "s@cret", host: "db.internal", port: 6543, database: "sales",
                                 sslMode: "disable"))
        #expect(PostgresURL.parse("postgresql://db")
            == PostgresURL.Parts(user: "postgres", password: nil, host: "db", port: 5432, database: nil))
        #expect(PostgresURL.parse("mysql://db") == nil)
        #expect(PostgresURL.parse("postgres://db:notaport/x") == nil)
    }

    @Test func redactsThePasswordOnly() {
        #expect(PostgresURL.redact("postgres://app:secret@db:5432/x") == "postgres://app:***@db:5432/x")
        #expect(PostgresURL.redact("postgres://app@db/x") == "postgres://app@db/x")
        #expect(PostgresURL.redact("${env:PG_URL}") == "${env:PG_URL}")
        let spec = PostgresSinkSpec(url: "postgres://app:secret@db/x", table: "t")
        let encoded = String(decoding: try! JSONEncoder().encode(spec), as: UTF8.self)
        #expect(!encoded.contains("secret"))
    }
}

@Suite struct PersonalDataTests {
    private let people = """
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: people, team: crm}
        spec:
          topic: people
          key: id
          schema:
            id: string
            email: {type: string, pii: true}
            address: {city: string, street: {type: string, pii: true}}
            card: {type: {last4: string}, pii: true}
            type: string
        """

    private func load(_ text: String) -> SpecLoadResult { SpecLoader.load([SpecFile(name: "people.yaml", content: text)]) }

    @Test func fieldsAreMarkedWithPII() throws {
        let result = load(people)
        #expect(result.errors.isEmpty, "\(result.errors)")
        guard case .dataset(let dataset, _) = try #require(result.documents.first) else { return }
        let schema = dataset.spec.schema
        #expect(schema.field(named: "email")?.pii == true && schema.field(named: "email")?.type == .string)
        #expect(schema.field(named: "id")?.pii == false && schema.field(named: "type")?.type == .string)
        guard case .object(let address)? = schema.field(named: "address")?.type else { Issue.record("address is not an object"); return }
        #expect(address.field(named: "street")?.pii == true && address.field(named: "city")?.pii == false)
        #expect(schema.field(named: "card")?.pii == true)
        // A mapping without `pii` is still an object's fields, even one named `type`.
        let plain = load(people.replacingOccurrences(of: "    type: string", with: "    kind: {type: string}"))
        guard case .dataset(let other, _)? = plain.documents.first else { Issue.record("\(plain.errors)"); return }
        #expect(other.spec.schema.field(named: "kind")?.type == .object(Schema(fields: [.init(name: "type", type: .string)])))
        // The marks survive the JSON the store keeps.
        let decoded = try JSONDecoder().decode(Schema.self, from: JSONEncoder().encode(schema))
        #expect(decoded == schema)
    }

    @Test func aBadMarkIsLocated() {
        let result = load(people.replacingOccurrences(of: "email: {type: string, pii: true}", with: "email: {type: strin, pii: maybe}"))
        #expect(result.errors.map(\.description).contains { $0.contains("people.yaml:9:31:") && $0.contains("spec.schema.email.pii: expected true or false") },
                "\(result.errors)")
        let unknown = load(people.replacingOccurrences(of: "email: {type: string, pii: true}", with: "email: {type: strin, pii: true}"))
        #expect(unknown.errors.map(\.description).contains { $0.contains("spec.schema.email.type: unknown type 'strin' (did you mean 'string'?)") },
                "\(unknown.errors)")
    }

    @Test func masksPersonalValuesAndWhatIsComputedFromThem() throws {
        guard case .dataset(let dataset, _)? = load(people).documents.first else { Issue.record("no dataset"); return }
        let row: JSONValue = ["id": "p-1", "email": "ann@example.com", "address": ["city": "Lyon", "street": "1 rue X"],
                              "card": ["last4": "4242"], "type": "gold"]
        #expect(dataset.spec.schema.masking(row) == ["id": "p-1", "email": "***", "address": ["city": "Lyon", "street": "***"],
                                                     "card": "***", "type": "gold"])
        let missing: JSONValue = ["id": "p-2", "email": nil]
        #expect(dataset.spec.schema.masking(missing) == missing)

        let product = DataProduct(metadata: ObjectMetadata(name: "contacts", team: "growth"), spec: DataProductSpec(
            from: "people",
            select: [SelectField(name: "id", expression: "id"), SelectField(name: "contact", expression: "lower(email)"),
                     SelectField(name: "city", expression: "address.city"), SelectField(name: "street", expression: "address.street"),
                     SelectField(name: "address", expression: "address")],
            sink: .file(FileSinkSpec(path: "c.jsonl", format: .jsonl))))
        let plan = try ProductPlan.compile(product, datasets: ["people": dataset])
        #expect(plan.outputSchema.fields.map(\.pii) == [false, true, false, true, true])
        // Marking a field changes nothing a product reads, so it rebuilds nothing.
        #expect(dataset.spec.recordShape == DatasetSpec(topic: "people", key: "id", schema: dataset.spec.schema.withoutPII))
        #expect(dataset.spec.recordShape != dataset.spec)
    }
}
