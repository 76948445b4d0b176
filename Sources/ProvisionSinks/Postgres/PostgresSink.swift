import Foundation
import Logging
import NIOCore
import PostgresNIO
import ProvisionModel
import ProvisionPipeline

/// Keeps a product as a table: rows upserted by key, deleted by tombstones, and the
/// checkpoint written in the same transaction as the rows, so the table and the checkpoint
/// never disagree (exactly once).
///
/// Not thread-safe: one pipeline owns it, and calls it from one task at a time.
public final class PostgresSink: Sink, @unchecked Sendable {
    private let spec: PostgresSinkSpec
    private let environment: [String: String]
    private let product: String
    private let outputSchema: Schema
    private let keyField: String
    private let logger: Logger
    private var connection: PostgresConnection?

    /// The column Provision keeps beside the output: the source offset of the row's newest
    /// write, so a stale write never wins.
    static let offsetColumn = "_provision_offset"
    static let checkpointTable = "provision_checkpoints"
    /// PostgreSQL takes at most 65,535 parameters in one statement.
    static let parametersMax = 65_535

    /// - Parameter environment: where `${env:NAME}` URLs are looked up.
    public init(spec: PostgresSinkSpec, environment: [String: String], product: String, outputSchema: Schema, keyField: String,
                logger: Logger)
    {
        self.spec = spec
        self.environment = environment
        self.product = product
        self.outputSchema = outputSchema
        self.keyField = keyField
        self.logger = logger
    }

    public var location: String { "\(spec.redactedURL) \(spec.schema).\(spec.table)" }

    private var qualifiedTable: String { "\(quoted(spec.schema)).\(quoted(spec.table))" }
    private var qualifiedCheckpoints: String { "\(quoted(spec.schema)).\(quoted(Self.checkpointTable))" }

    /// The server to write to, with the URL reference resolved.
    private func resolve() throws -> PostgresURL.Parts {
        var url = spec.url
        if let variable = spec.environmentVariable {
            guard let value = environment[variable], !value.isEmpty else {
                throw SinkError(reason: "SinkUnavailable", message: "the environment variable \(variable) is not set on the server")
            }
            url = value
        }
        guard let parts = PostgresURL.parse(url) else {
            throw SinkError(reason: "SinkUnavailable", message: "\(spec.redactedURL) is not a postgres:// URL")
        }
        return parts
    }

    // MARK: Sink

    public func open() async throws -> Checkpoint? {
        let connection = try await connect()
        try await run("CREATE SCHEMA IF NOT EXISTS \(quoted(spec.schema))", on: connection)
        try await run("""
            CREATE TABLE IF NOT EXISTS \(qualifiedCheckpoints) (
              output_table text PRIMARY KEY, product text NOT NULL, checkpoint jsonb NOT NULL,
              updated_at timestamptz NOT NULL DEFAULT now())
            """, on: connection)
        if try await provisionTable(on: connection) {
            // A new table starts from nothing, whatever an earlier table of that name reached.
            try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(qualifiedCheckpoints) WHERE output_table = $1",
                                                     binds: try bindings([.string(checkpointKey)])), logger: logger)
        }
        let rows = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT checkpoint::text FROM \(qualifiedCheckpoints) WHERE output_table = $1",
                          binds: try bindings([.string(checkpointKey)])),
            logger: logger)
        for try await (text) in rows.decode(String.self) {
            return try JSONDecoder().decode(Checkpoint.self, from: Data(text.utf8))
        }
        return nil
    }

    public func write(_ records: [OutputRecord], checkpoint: Checkpoint) async throws {
        let connection = try await connect()
        // The newest write per key wins within a batch; earlier ones would be overwritten anyway,
        // and one INSERT may not touch a row twice.
        var latest: [String: Int] = [:]
        var order: [String] = []
        for (index, record) in records.enumerated() {
            guard let key = record.key, !key.isNull else { continue }
            let text = key.text
            if latest.updateValue(index, forKey: text) == nil { order.append(text) }
        }
        var upserts: [OutputRecord] = []
        var deletes: [String] = []
        for key in order {
            let record = records[latest[key]!]
            if case .tombstone = record.body { deletes.append(key) } else { upserts.append(record) }
        }
        let checkpointJSON = String(decoding: try JSONEncoder().encode(checkpoint), as: UTF8.self)
        do {
            try await connection.withTransaction(logger: logger) { connection in
                try await self.upsert(upserts, on: connection)
                if !deletes.isEmpty { try await self.delete(deletes, on: connection) }
                try await connection.query(PostgresQuery(unsafeSQL: """
                    INSERT INTO \(self.qualifiedCheckpoints) (output_table, product, checkpoint) VALUES ($1, $2, $3::jsonb)
                    ON CONFLICT (output_table) DO UPDATE
                    SET product = EXCLUDED.product, checkpoint = EXCLUDED.checkpoint, updated_at = now()
                    """, binds: try self.bindings([.string(self.checkpointKey), .string(self.product), .string(checkpointJSON)])),
                    logger: self.logger)
            }
        } catch {
            throw failure(error, doing: "write a batch")
        }
    }

    public func close() async {
        if let connection {
            try? await connection.close()
            self.connection = nil
        }
    }

    public func destroy() async throws {
        let connection = try await connect()
        try await run("DROP TABLE IF EXISTS \(qualifiedTable)", on: connection)
        if try await tableExists(spec.schema, Self.checkpointTable, on: connection) {
            try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(qualifiedCheckpoints) WHERE output_table = $1",
                                                     binds: try bindings([.string(checkpointKey)])), logger: logger)
        }
        await close()
    }

    // MARK: Provisioning

    /// A checkpoint belongs to the table it describes: two products, or two servers, never
    /// share one, and a table created anew never inherits one.
    private var checkpointKey: String { "\(spec.schema).\(spec.table)" }

    /// Creates the table from the output schema, or adopts an existing one whose columns fit;
    /// returns true if it created it. An incompatible table is reported, never altered.
    private func provisionTable(on connection: PostgresConnection) async throws -> Bool {
        let columns = try await existingColumns(on: connection)
        guard !columns.isEmpty else {
            var definitions = outputSchema.fields.map { "\(quoted($0.name)) \(Self.columnType($0.type))" }
            definitions.append("\(quoted(Self.offsetColumn)) bigint NOT NULL")
            definitions.append("PRIMARY KEY (\(quoted(keyField)))")
            try await run("CREATE TABLE IF NOT EXISTS \(qualifiedTable) (\(definitions.joined(separator: ", ")))", on: connection)
            return true
        }
        var problems: [String] = []
        for field in outputSchema.fields {
            let wanted = Self.columnType(field.type)
            guard let actual = columns[field.name] else {
                problems.append("column \(field.name) is missing")
                continue
            }
            if Self.catalogTypeName(wanted) != actual { problems.append("column \(field.name) is \(actual), not \(wanted)") }
        }
        if columns[Self.offsetColumn] != "bigint" { problems.append("column \(Self.offsetColumn) is missing") }
        guard problems.isEmpty else {
            throw SinkError(reason: "IncompatibleTable",
                            message: "\(spec.schema).\(spec.table) exists with another shape (\(problems.joined(separator: "; "))); Provision does not alter it")
        }
        return false
    }

    private func existingColumns(on connection: PostgresConnection) async throws -> [String: String] {
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT column_name::text, data_type::text FROM information_schema.columns
            WHERE table_schema = $1 AND table_name = $2
            """, binds: try bindings([.string(spec.schema), .string(spec.table)])), logger: logger)
        var columns: [String: String] = [:]
        for try await (name, type) in rows.decode((String, String).self) { columns[name] = type }
        return columns
    }

    private func tableExists(_ schema: String, _ table: String, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT count(*)::bigint FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2
            """, binds: try bindings([.string(schema), .string(table)])), logger: logger)
        for try await (count) in rows.decode(Int64.self) { return count > 0 }
        return false
    }

    static func columnType(_ type: ValueType) -> String {
        switch type {
        case .string, .duration: return "text"
        case .integer: return "bigint"
        case .decimal: return "numeric"
        case .boolean: return "boolean"
        case .timestamp: return "timestamptz"
        case .json, .null, .object: return "jsonb"
        }
    }

    /// How information_schema names a column type.
    static func catalogTypeName(_ columnType: String) -> String {
        columnType == "timestamptz" ? "timestamp with time zone" : columnType
    }

    // MARK: Writes

    private func upsert(_ records: [OutputRecord], on connection: PostgresConnection) async throws {
        guard !records.isEmpty else { return }
        let names = outputSchema.fields.map(\.name) + [Self.offsetColumn]
        let types = outputSchema.fields.map { Self.columnType($0.type) } + ["bigint"]
        let rowsPerStatement = max(1, Self.parametersMax / names.count)
        let updates = names.filter { $0 != keyField }.map { "\(quoted($0)) = EXCLUDED.\(quoted($0))" }.joined(separator: ", ")
        var start = 0
        while start < records.count {
            let chunk = records[start..<min(start + rowsPerStatement, records.count)]
            var values: [Value?] = []
            values.reserveCapacity(chunk.count * names.count)
            var tuples: [String] = []
            for record in chunk {
                var placeholders: [String] = []
                let row = rowValues(record)
                for (column, value) in row.enumerated() {
                    values.append(value)
                    placeholders.append("$\(values.count)::\(types[column])")
                }
                values.append(.integer(record.offset))
                placeholders.append("$\(values.count)::bigint")
                tuples.append("(\(placeholders.joined(separator: ", ")))")
            }
            // A write older than the row's newest source position never wins.
            let sql = """
                INSERT INTO \(qualifiedTable) (\(names.map(quoted).joined(separator: ", "))) VALUES \(tuples.joined(separator: ", "))
                ON CONFLICT (\(quoted(keyField))) DO UPDATE SET \(updates)
                WHERE \(qualifiedTable).\(quoted(Self.offsetColumn)) <= EXCLUDED.\(quoted(Self.offsetColumn))
                """
            try await connection.query(PostgresQuery(unsafeSQL: sql, binds: try bindings(values)), logger: logger)
            start += chunk.count
        }
    }

    private func delete(_ keys: [String], on connection: PostgresConnection) async throws {
        let keyType = Self.columnType(outputSchema.field(named: keyField)?.type ?? .string)
        var bindings = PostgresBindings()
        bindings.append(keys)
        try await connection.query(PostgresQuery(unsafeSQL: """
            DELETE FROM \(qualifiedTable) WHERE \(quoted(keyField)) = ANY($1::text[]::\(keyType)[])
            """, binds: bindings), logger: logger)
    }

    private func rowValues(_ record: OutputRecord) -> [Value?] {
        switch record.body {
        case .row(let values): return values
        case .document(_, let fields): return fields.map { $0.map(Value.json) }
        case .tombstone: return []
        }
    }

    /// Every value travels as text and is cast in SQL, so one code path serves every type.
    private func bindings(_ values: [Value?]) throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            guard let value, !value.isNull else {
                bindings.appendNull()
                continue
            }
            switch value {
            case .json(let json):
                if case .string(let text) = json { bindings.append(text) } else { bindings.append(JSONWriter.string(json)) }
            default:
                bindings.append(value.text)
            }
        }
        return bindings
    }

    // MARK: Connection

    private func connect() async throws -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        let target = try resolve()
        let configuration = PostgresConnection.Configuration(
            host: target.host, port: target.port, username: target.user, password: target.password,
            database: target.database, tls: .disable)
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
            self.connection = connection
            return connection
        } catch {
            throw failure(error, doing: "connect")
        }
    }

    private func run(_ sql: String, on connection: PostgresConnection) async throws {
        do {
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        } catch {
            throw failure(error, doing: "provision \(spec.schema).\(spec.table)")
        }
    }

    /// A failure with the server's own words, and never the password.
    private func failure(_ error: Error, doing what: String) -> Error {
        if error is SinkError { return error }
        var detail = "\(error)"
        if let psql = error as? PSQLError {
            if let message = psql.serverInfo?[.message] {
                detail = message
            } else {
                detail = "\(psql.code)"
                if let underlying = psql.underlying { detail += ": \(underlying)" }
            }
        }
        if let password = (try? resolve())?.password, !password.isEmpty {
            detail = detail.replacingOccurrences(of: password, with: "***")
        }
        return SinkError(reason: "SinkUnavailable", message: "cannot \(what) at \(location): \(detail)")
    }

    private func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
