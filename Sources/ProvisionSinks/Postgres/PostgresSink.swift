import Foundation
import Logging
import NIOCore
import PostgresNIO
import ProvisionFailpoints
import ProvisionModel
import ProvisionPipeline

/// Keeps a product as a table: rows upserted by key, deleted by tombstones, and the
/// checkpoint written in the same transaction as the rows, so the table and the checkpoint
/// never disagree (exactly once).
///
/// A rebuild that changes the table's shape is written to a table beside it and renamed
/// into place in one transaction once it has caught up; a rebuild that only adds columns
/// adds them and refills existing rows from history. Readers never see an empty or
/// half-filled table.
///
/// Not thread-safe: one pipeline owns it, and calls it from one task at a time.
public final class PostgresSink: Sink, @unchecked Sendable {
    private let spec: PostgresSinkSpec
    private let resolver: SinkResolver
    private let product: String
    private let outputSchema: Schema
    private let keyField: String
    private let build: SinkBuild
    private let logger: Logger
    private var connection: PostgresConnection?
    /// The table being written: the one readers use, or its replacement being built.
    private var target: String
    /// While an extension refills existing rows: per partition, the offset below which a
    /// record only refreshes the row it is the current version of.
    private var refreshUntil: [Int: Int64]?
    private var directCopy = DirectCopyPolicy()

    /// The column Provision keeps beside the output: the source offset of the row's newest
    /// write, so a stale write never wins.
    static let offsetColumn = "_provision_offset"
    static let checkpointTable = "provision_checkpoints"
    /// PostgreSQL takes at most 65,535 parameters in one statement.
    static let parametersMax = 65_535
    /// From this many rows on, a batch goes through COPY and a merge; fewer go as one INSERT.
    static let copyRowsMin = 256
    /// How much COPY data is sent per message.
    static let copyChunkBytes = 1 << 20

    /// - Parameter resolver: what the URL's reference resolves against, and where it may connect.
    public init(spec: PostgresSinkSpec, resolver: SinkResolver, product: String, outputSchema: Schema, keyField: String,
                build: SinkBuild = SinkBuild(number: 1, kind: .fresh), logger: Logger)
    {
        self.spec = spec
        self.resolver = resolver
        self.product = product
        self.outputSchema = outputSchema
        self.keyField = keyField
        self.build = build
        self.logger = logger
        target = spec.table
    }

    public var location: String { "\(spec.redactedURL) \(spec.schema).\(spec.table)" }

    public var readsAhead: Bool { true }

    /// The name of the table a replacement is built in.
    var replacementTable: String { PostgresText.identifier(spec.table, suffix: "_build\(build.number)") }

    private var columnNames: [String] { outputSchema.fields.map(\.name) + [Self.offsetColumn] }
    private var columnTypes: [String] { outputSchema.fields.map { PostgresText.columnType($0.type) } + ["bigint"] }

    private func qualified(_ table: String) -> String { "\(quoted(spec.schema)).\(quoted(table))" }
    private var checkpoints: String { qualified(Self.checkpointTable) }

    // MARK: Sink

    public func open() async throws -> Checkpoint? {
        let connection = try await connect()
        try await run("CREATE SCHEMA IF NOT EXISTS \(quoted(spec.schema))", on: connection)
        // One row per table Provision writes in this schema; `serves` names the table readers
        // use, which differs from `output_table` while a replacement is being built.
        try await run("""
            CREATE TABLE IF NOT EXISTS \(checkpoints) (
              output_table text PRIMARY KEY, serves text NOT NULL, product text NOT NULL, build bigint NOT NULL,
              checkpoint jsonb, refresh_until jsonb, updated_at timestamptz NOT NULL DEFAULT now())
            """, on: connection)
        let served = spec.table
        let servedShape = try await shape(of: served, on: connection)
        let servedRow = try await checkpointRow(served, on: connection)
        refreshUntil = nil

        guard let servedShape else {
            try await dropReplacements(keeping: nil, on: connection)
            try await createTable(served, on: connection)
            try await claim(served, on: connection)
            target = served
            return nil
        }
        if let row = servedRow, row.product == product, row.build == build.number {
            if let problems = problems(with: servedShape) { throw incompatible(served, problems) }
            target = served
            refreshUntil = row.refreshUntil
            return row.checkpoint
        }
        guard let row = servedRow, row.product == product, build.kind != .fresh else {
            // A table Provision does not maintain: adopted if its shape fits, never altered.
            if let problems = problems(with: servedShape) { throw incompatible(served, problems) }
            try await claim(served, on: connection)
            target = served
            return nil
        }
        if build.kind == .widening, let missing = missingColumns(in: servedShape) {
            // Rows written before this build are refreshed up to where the old build had got;
            // an extension over an unfinished one keeps the further boundary.
            var boundary = row.refreshUntil ?? [:]
            for (partition, offset) in row.checkpoint?.offsets ?? [:] { boundary[partition] = max(boundary[partition] ?? 0, offset) }
            try await transaction(on: connection) { connection in
                for field in missing {
                    try await connection.query(PostgresQuery(unsafeSQL: """
                        ALTER TABLE \(self.qualified(served)) ADD COLUMN \(self.quoted(field.name)) \(PostgresText.columnType(field.type))
                        """), logger: self.logger)
                }
                try await self.claim(served, refreshUntil: boundary.isEmpty ? nil : boundary, on: connection)
            }
            Failpoint.reached(.postgresColumnsAdded)
            logger.info("columns added", metadata: ["table": "\(spec.schema).\(served)", "columns": "\(missing.map(\.name))"])
            target = served
            refreshUntil = boundary.isEmpty ? nil : boundary
            return nil
        }
        let replacement = replacementTable
        try await dropReplacements(keeping: replacement, on: connection)
        if let row = try await checkpointRow(replacement, on: connection), row.product == product, row.build == build.number,
           try await shape(of: replacement, on: connection) != nil
        {
            target = replacement
            return row.checkpoint
        }
        try await run("DROP TABLE IF EXISTS \(qualified(replacement))", on: connection)
        try await createTable(replacement, on: connection)
        try await claim(replacement, on: connection)
        logger.info("building a replacement table", metadata: ["table": "\(spec.schema).\(served)", "replacement": "\(replacement)"])
        target = replacement
        return nil
    }

    public func write(_ batch: SinkBatch) async throws -> Checkpoint {
        let connection = try await connect()
        let nextRefresh = refreshUntil.flatMap { boundary in
            boundary.contains { batch.checkpoint.offsets[$0.key] ?? 0 < $0.value } ? boundary : nil
        }
        do {
            try await transaction(on: connection) { connection in
                if try await !self.copyDirectlyIfNew(batch.records, on: connection) {
                    try await self.apply(Changes(batch.records, refreshUntil: self.refreshUntil).all[...], on: connection)
                }
                try await self.saveCheckpoint(batch.checkpoint, refreshUntil: nextRefresh, on: connection)
                Failpoint.reached(.postgresBatchUncommitted)
            }
            refreshUntil = nextRefresh
            return batch.checkpoint
        } catch where Self.isRowError(error) {
            // Some rows are refused: find them by halving, each try behind a savepoint, so the
            // rest of the batch commits with the checkpoint.
        } catch {
            throw failure(error, doing: "write a batch")
        }
        do {
            let changes = Changes(batch.records, refreshUntil: refreshUntil)
            let committed = try await transaction(on: connection) { connection in
                let rejections = try await self.isolateRejections(changes.all[...], on: connection)
                try await batch.deadLetter(rejections)
                let committed = batch.checkpoint(rejecting: rejections.count)
                try await self.saveCheckpoint(committed, refreshUntil: nextRefresh, on: connection)
                if !rejections.isEmpty {
                    self.logger.warning("rows refused", metadata: ["table": "\(self.spec.schema).\(self.target)",
                                                                  "count": "\(rejections.count)",
                                                                  "first": "\(rejections[0].reason)"])
                }
                return committed
            }
            refreshUntil = nextRefresh
            return committed
        } catch {
            throw failure(error, doing: "write a batch")
        }
    }

    public func promote() async throws {
        let served = spec.table, replacement = target
        guard replacement != served else { return }
        let connection = try await connect()
        do {
            try await transaction(on: connection) { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(self.qualified(served))"), logger: self.logger)
                try await connection.query(PostgresQuery(unsafeSQL: """
                    ALTER TABLE \(self.qualified(replacement)) RENAME TO \(self.quoted(served))
                    """), logger: self.logger)
                Failpoint.reached(.postgresSwapRenamed)
                try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(self.checkpoints) WHERE output_table = $1",
                                                         binds: try self.bindings([.string(served)])), logger: self.logger)
                try await connection.query(PostgresQuery(unsafeSQL: """
                    UPDATE \(self.checkpoints) SET output_table = $1, updated_at = now() WHERE output_table = $2
                    """, binds: try self.bindings([.string(served), .string(replacement)])), logger: self.logger)
            }
        } catch {
            throw failure(error, doing: "swap in the rebuilt table")
        }
        Failpoint.reached(.postgresSwapCommitted)
        logger.info("rebuilt table swapped in", metadata: ["table": "\(spec.schema).\(served)", "from": "\(replacement)"])
        target = served
    }

    public func close() async {
        if let connection {
            try? await connection.close()
            self.connection = nil
        }
    }

    public func destroy() async throws {
        let connection = try await connect()
        try await run("DROP TABLE IF EXISTS \(qualified(spec.table))", on: connection)
        if try await shape(of: Self.checkpointTable, on: connection) != nil {
            try await dropReplacements(keeping: nil, on: connection)
            try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(checkpoints) WHERE output_table = $1",
                                                     binds: try bindings([.string(spec.table)])), logger: logger)
        }
        await close()
    }

    /// The product is gone but its table stays: Provision stops maintaining it, and a
    /// product that takes it over later starts from the beginning.
    public func detach() async throws {
        let connection = try await connect()
        if try await shape(of: Self.checkpointTable, on: connection) != nil {
            try await dropReplacements(keeping: nil, on: connection)
            try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(checkpoints) WHERE output_table = $1",
                                                     binds: try bindings([.string(spec.table)])), logger: logger)
        }
        await close()
    }

    // MARK: Provisioning

    private struct CheckpointRow {
        var product: String
        var build: Int
        var checkpoint: Checkpoint?
        var refreshUntil: [Int: Int64]?
    }

    /// A table's columns (name → catalog type) and primary key, or nil if it does not exist.
    private struct TableShape: Equatable {
        var columns: [String: String]
        var primaryKey: [String]
    }

    private func checkpointRow(_ table: String, on connection: PostgresConnection) async throws -> CheckpointRow? {
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT product, build, checkpoint::text, refresh_until::text FROM \(checkpoints) WHERE output_table = $1
            """, binds: try bindings([.string(table)])), logger: logger)
        for try await (product, build, checkpoint, refreshUntil) in rows.decode((String, Int64, String?, String?).self) {
            let decoder = JSONDecoder()
            return CheckpointRow(
                product: product, build: Int(build),
                checkpoint: try checkpoint.map { try decoder.decode(Checkpoint.self, from: Data($0.utf8)) },
                refreshUntil: try refreshUntil.map { try decoder.decode([Int: Int64].self, from: Data($0.utf8)) })
        }
        return nil
    }

    /// Makes `table` this build's output, starting from nothing.
    private func claim(_ table: String, refreshUntil: [Int: Int64]? = nil, on connection: PostgresConnection) async throws {
        let boundary = try refreshUntil.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
        try await connection.query(PostgresQuery(unsafeSQL: """
            INSERT INTO \(checkpoints) (output_table, serves, product, build, checkpoint, refresh_until)
            VALUES ($1, $2, $3, $4::bigint, NULL, $5::jsonb)
            ON CONFLICT (output_table) DO UPDATE SET serves = EXCLUDED.serves, product = EXCLUDED.product,
              build = EXCLUDED.build, checkpoint = NULL, refresh_until = EXCLUDED.refresh_until, updated_at = now()
            """, binds: try bindings([.string(table), .string(spec.table), .string(product), .integer(Int64(build.number)),
                                      boundary.map(Value.string)])), logger: logger)
    }

    private func saveCheckpoint(_ checkpoint: Checkpoint, refreshUntil: [Int: Int64]?, on connection: PostgresConnection) async throws {
        let encoder = JSONEncoder()
        let checkpointJSON = String(decoding: try encoder.encode(checkpoint), as: UTF8.self)
        let boundary = try refreshUntil.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        try await connection.query(PostgresQuery(unsafeSQL: """
            UPDATE \(checkpoints) SET checkpoint = $2::jsonb, refresh_until = $3::jsonb, updated_at = now()
            WHERE output_table = $1
            """, binds: try bindings([.string(target), .string(checkpointJSON), boundary.map(Value.string)])), logger: logger)
    }

    /// Drops replacements of the served table left by earlier builds (a rebuild that was
    /// itself replaced, or a product deleted mid-rebuild).
    private func dropReplacements(keeping kept: String?, on connection: PostgresConnection) async throws {
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT output_table FROM \(checkpoints) WHERE serves = $1 AND output_table <> $1
            """, binds: try bindings([.string(spec.table)])), logger: logger)
        var stale: [String] = []
        for try await (table) in rows.decode(String.self) where table != kept { stale.append(table) }
        for table in stale {
            try await run("DROP TABLE IF EXISTS \(qualified(table))", on: connection)
            try await connection.query(PostgresQuery(unsafeSQL: "DELETE FROM \(checkpoints) WHERE output_table = $1",
                                                     binds: try bindings([.string(table)])), logger: logger)
        }
    }

    private func createTable(_ table: String, on connection: PostgresConnection) async throws {
        var definitions = zip(columnNames, columnTypes).map { "\(quoted($0)) \($1)" }
        definitions[definitions.count - 1] += " NOT NULL"
        definitions.append("PRIMARY KEY (\(quoted(keyField)))")
        try await run("CREATE TABLE IF NOT EXISTS \(qualified(table)) (\(definitions.joined(separator: ", ")))", on: connection)
    }

    private func shape(of table: String, on connection: PostgresConnection) async throws -> TableShape? {
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT column_name::text, data_type::text FROM information_schema.columns
            WHERE table_schema = $1 AND table_name = $2
            """, binds: try bindings([.string(spec.schema), .string(table)])), logger: logger)
        var columns: [String: String] = [:]
        for try await (name, type) in rows.decode((String, String).self) { columns[name] = type }
        guard !columns.isEmpty else { return nil }
        let keys = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT a.attname::text FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY a.attnum
            """, binds: try bindings([.string(qualified(table))])), logger: logger)
        var primaryKey: [String] = []
        for try await (name) in keys.decode(String.self) { primaryKey.append(name) }
        return TableShape(columns: columns, primaryKey: primaryKey)
    }

    /// Why an existing table cannot hold this output, or nil if it can.
    private func problems(with shape: TableShape) -> [String]? {
        var problems: [String] = []
        for field in outputSchema.fields {
            let wanted = PostgresText.columnType(field.type)
            guard let actual = shape.columns[field.name] else {
                problems.append("column \(field.name) is missing")
                continue
            }
            if PostgresText.catalogTypeName(wanted) != actual { problems.append("column \(field.name) is \(actual), not \(wanted)") }
        }
        if shape.columns[Self.offsetColumn] != "bigint" { problems.append("column \(Self.offsetColumn) is missing") }
        if shape.primaryKey != [keyField] {
            problems.append("the primary key is (\(shape.primaryKey.joined(separator: ", "))), not (\(keyField))")
        }
        return problems.isEmpty ? nil : problems
    }

    /// The output fields the table lacks, if adding them is all it takes to fit; nil if a
    /// column has another type or the key differs.
    private func missingColumns(in shape: TableShape) -> [Schema.Field]? {
        guard shape.primaryKey == [keyField], shape.columns[Self.offsetColumn] == "bigint" else { return nil }
        var missing: [Schema.Field] = []
        for field in outputSchema.fields {
            guard let actual = shape.columns[field.name] else {
                missing.append(field)
                continue
            }
            if PostgresText.catalogTypeName(PostgresText.columnType(field.type)) != actual { return nil }
        }
        return missing
    }

    private func incompatible(_ table: String, _ problems: [String]) -> SinkError {
        SinkError(reason: "IncompatibleTable",
                  message: "\(spec.schema).\(table) exists with another shape (\(problems.joined(separator: "; "))); Provision does not alter it")
    }

    // MARK: Writes

    /// A batch reduced to what the table must do: the newest record per key wins.
    struct Changes {
        enum Kind { case upsert, delete, refresh }
        struct Change {
            var kind: Kind
            var record: OutputRecord
        }

        var all: [Change] = []

        init(_ records: [OutputRecord], refreshUntil: [Int: Int64]?) {
            // One statement may not touch a row twice, and an earlier write to a key would be
            // overwritten within the same transaction anyway.
            var latest: [String: Int] = [:]
            var latestRefresh: [String: Int] = [:]
            latest.reserveCapacity(records.count)
            for (index, record) in records.enumerated() {
                guard let key = record.key, !key.isNull else { continue }
                if let boundary = refreshUntil?[record.partition], record.offset < boundary {
                    // Below the boundary a record only refreshes the row it is the current
                    // version of: a tombstone there has nothing left to do.
                    if case .tombstone = record.body { continue }
                    latestRefresh[key.text] = index
                } else {
                    latest[key.text] = index
                }
            }
            for index in latestRefresh.values.sorted() {
                all.append(Change(kind: .refresh, record: records[index]))
            }
            for index in latest.values.sorted() {
                let record = records[index]
                if case .tombstone = record.body {
                    all.append(Change(kind: .delete, record: record))
                } else {
                    all.append(Change(kind: .upsert, record: record))
                }
            }
        }
    }

    private func apply(_ range: ArraySlice<Changes.Change>, on connection: PostgresConnection) async throws {
        var upserts: [OutputRecord] = [], deletes: [String] = [], refreshes: [OutputRecord] = []
        for change in range {
            switch change.kind {
            case .upsert: upserts.append(change.record)
            case .delete: deletes.append(change.record.key?.text ?? "")
            case .refresh: refreshes.append(change.record)
            }
        }
        let assignments = columnNames.filter { $0 != keyField }
        if !refreshes.isEmpty {
            let staging = try await stage(refreshes, as: "provision_refresh", on: connection)
            // Only the row's current version refreshes it: older versions and rows since
            // deleted are left alone, so readers see no row come back or go stale.
            try await connection.query(PostgresQuery(unsafeSQL: """
                UPDATE \(qualified(target)) AS t SET \(assignments.map { "\(quoted($0)) = s.\(quoted($0))" }.joined(separator: ", "))
                FROM \(staging) AS s
                WHERE t.\(quoted(keyField)) = s.\(quoted(keyField)) AND t.\(quoted(Self.offsetColumn)) = s.\(quoted(Self.offsetColumn))
                """), logger: logger)
        }
        if upserts.count >= Self.copyRowsMin {
            let staging = try await stage(upserts, as: "provision_upserts", on: connection)
            let names = columnNames.map(quoted).joined(separator: ", ")
            try await connection.query(PostgresQuery(unsafeSQL: """
                INSERT INTO \(qualified(target)) (\(names)) SELECT \(names) FROM \(staging)
                ON CONFLICT (\(quoted(keyField))) DO UPDATE SET \(assignments.map { "\(quoted($0)) = EXCLUDED.\(quoted($0))" }.joined(separator: ", "))
                WHERE \(qualified(target)).\(quoted(Self.offsetColumn)) <= EXCLUDED.\(quoted(Self.offsetColumn))
                """), logger: logger)
        } else if !upserts.isEmpty {
            try await insert(upserts, on: connection)
        }
        if !deletes.isEmpty {
            let keyType = PostgresText.columnType(outputSchema.field(named: keyField)?.type ?? .string)
            var bindings = PostgresBindings()
            bindings.append(deletes)
            try await connection.query(PostgresQuery(unsafeSQL: """
                DELETE FROM \(qualified(target)) WHERE \(quoted(keyField)) = ANY($1::text[]::\(keyType)[])
                """, binds: bindings), logger: logger)
        }
    }

    /// Tries to COPY a large batch of upserts straight into the table, behind a savepoint:
    /// when none of their keys is in the table or twice in the batch (a backfill of events
    /// that are never updated, or the first pass over a changelog) this is as fast as loading
    /// gets, where the merge through a staging table costs the server about twice as much.
    /// Returns false, with nothing written, when the batch is not like that.
    private func copyDirectlyIfNew(_ records: [OutputRecord], on connection: PostgresConnection) async throws -> Bool {
        guard refreshUntil == nil, records.count >= Self.copyRowsMin else { return false }
        for record in records {
            // Order matters once a key may be deleted; a record without a key is not written.
            if case .tombstone = record.body { return false }
            if record.key?.isNull ?? true { return false }
        }
        guard directCopy.shouldTry() else { return false }
        try await connection.query("SAVEPOINT provision_direct", logger: logger)
        do {
            // COPY names its table without a schema.
            try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL search_path TO \(quoted(spec.schema))"), logger: logger)
            try await copy(records, into: target, on: connection)
            try await connection.query("RELEASE SAVEPOINT provision_direct", logger: logger)
            directCopy.succeeded()
            return true
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            try await connection.query("ROLLBACK TO SAVEPOINT provision_direct", logger: logger)
            try await connection.query("RELEASE SAVEPOINT provision_direct", logger: logger)
            directCopy.failed()
            return false
        }
    }

    /// Copies rows into a temporary table that lives until the transaction ends; returns its
    /// name. COPY parses and loads far faster than parameterised INSERTs.
    private func stage(_ records: [OutputRecord], as name: String, on connection: PostgresConnection) async throws -> String {
        let definitions = zip(columnNames, columnTypes).map { "\(quoted($0)) \($1)" }.joined(separator: ", ")
        try await connection.query(PostgresQuery(unsafeSQL: """
            CREATE TEMPORARY TABLE IF NOT EXISTS \(name) (\(definitions)) ON COMMIT DROP
            """), logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "TRUNCATE \(name)"), logger: logger)
        try await copy(records, into: name, on: connection)
        return name
    }

    /// Streams rows to `COPY table FROM STDIN` in text format, a chunk at a time.
    private func copy(_ records: [OutputRecord], into table: String, on connection: PostgresConnection) async throws {
        let types = columnTypes
        try await connection.copyFrom(table: table, columns: columnNames, logger: logger) { writer in
            var buffer = ByteBuffer()
            buffer.reserveCapacity(Self.copyChunkBytes + 64 * 1024)
            var scratch: [UInt8] = []
            scratch.reserveCapacity(64)
            for record in records {
                switch record.body {
                case .row(let values):
                    for column in values.indices {
                        PostgresText.appendCopyField(values[column], columnType: types[column], to: &buffer, scratch: &scratch)
                        buffer.writeInteger(UInt8(ascii: "\t"))
                    }
                case .document(_, let fields):
                    for column in fields.indices {
                        PostgresText.appendCopyField(fields[column].map(Value.json), columnType: types[column], to: &buffer,
                                                     scratch: &scratch)
                        buffer.writeInteger(UInt8(ascii: "\t"))
                    }
                case .tombstone:
                    continue
                }
                PostgresText.appendInteger(record.offset, to: &buffer)
                buffer.writeInteger(UInt8(ascii: "\n"))
                if buffer.readableBytes >= Self.copyChunkBytes {
                    try await writer.write(buffer)
                    buffer.clear()
                }
            }
            if buffer.readableBytes > 0 { try await writer.write(buffer) }
        }
    }

    /// Upserts a few rows with one multi-row INSERT (as many statements as the parameter
    /// limit needs).
    private func insert(_ records: [OutputRecord], on connection: PostgresConnection) async throws {
        let names = columnNames, types = columnTypes
        let rowsPerStatement = max(1, Self.parametersMax / names.count)
        let updates = names.filter { $0 != keyField }.map { "\(quoted($0)) = EXCLUDED.\(quoted($0))" }.joined(separator: ", ")
        var start = 0
        while start < records.count {
            let chunk = records[start..<min(start + rowsPerStatement, records.count)]
            var texts: [String?] = []
            texts.reserveCapacity(chunk.count * names.count)
            var tuples: [String] = []
            for record in chunk {
                var placeholders: [String] = []
                for (column, value) in rowValues(record).enumerated() {
                    texts.append(PostgresText.text(value, columnType: types[column]))
                    placeholders.append("$\(texts.count)::\(types[column])")
                }
                texts.append(String(record.offset))
                placeholders.append("$\(texts.count)::bigint")
                tuples.append("(\(placeholders.joined(separator: ", ")))")
            }
            // A write older than the row's newest source position never wins.
            let sql = """
                INSERT INTO \(qualified(target)) (\(names.map(quoted).joined(separator: ", "))) VALUES \(tuples.joined(separator: ", "))
                ON CONFLICT (\(quoted(keyField))) DO UPDATE SET \(updates)
                WHERE \(qualified(target)).\(quoted(Self.offsetColumn)) <= EXCLUDED.\(quoted(Self.offsetColumn))
                """
            var bindings = PostgresBindings(capacity: texts.count)
            for text in texts {
                if let text { bindings.append(text) } else { bindings.appendNull() }
            }
            try await connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger)
            start += chunk.count
        }
    }

    /// Applies the changes, setting aside the ones the database refuses: each try runs
    /// behind a savepoint, and a refused range is halved until the refused rows stand alone.
    private func isolateRejections(_ range: ArraySlice<Changes.Change>, on connection: PostgresConnection) async throws -> [SinkRejection]
    {
        guard !range.isEmpty else { return [] }
        try await connection.query("SAVEPOINT provision_try", logger: logger)
        var rejections: [SinkRejection] = []
        do {
            try await apply(range, on: connection)
        } catch where Self.isRowError(error) {
            try await connection.query("ROLLBACK TO SAVEPOINT provision_try", logger: logger)
            if range.count == 1, let change = range.first {
                rejections.append(SinkRejection(partition: change.record.partition, offset: change.record.offset,
                                                reason: "PostgreSQL refused the row: \(Self.serverMessage(error))"))
            } else {
                let middle = range.startIndex + range.count / 2
                rejections += try await isolateRejections(range[..<middle], on: connection)
                rejections += try await isolateRejections(range[middle...], on: connection)
            }
        }
        try await connection.query("RELEASE SAVEPOINT provision_try", logger: logger)
        return rejections
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
            if let text = PostgresText.text(value, columnType: "text") { bindings.append(text) } else { bindings.appendNull() }
        }
        return bindings
    }

    /// Errors about the data of a row rather than the server or the statement: data
    /// exceptions (22), integrity constraints (23) and limits such as an oversized key (54).
    static func isRowError(_ error: Error) -> Bool {
        guard let psql = error as? PSQLError, let state = psql.serverInfo?[.sqlState] else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23") || state.hasPrefix("54")
    }

    static func serverMessage(_ error: Error) -> String {
        guard let psql = error as? PSQLError, let message = psql.serverInfo?[.message] else { return "\(error)" }
        var text = message
        if let detail = psql.serverInfo?[.detail] { text += " (\(detail))" }
        if let state = psql.serverInfo?[.sqlState] { text += " [SQLSTATE \(state)]" }
        return text
    }

    // MARK: Connection

    private func transaction<Result>(on connection: PostgresConnection,
                                     _ body: (PostgresConnection) async throws -> Result) async throws -> Result
    {
        try await connection.query("BEGIN", logger: logger)
        do {
            let result = try await body(connection)
            try await connection.query("COMMIT", logger: logger)
            return result
        } catch {
            // The original error says what went wrong; a failed rollback only means the
            // connection is gone, and the server rolls back on its own then.
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }

    private func connect() async throws -> PostgresConnection {
        if let connection, !connection.isClosed { return connection }
        let server = try PostgresServer.resolve(spec, resolver: resolver)
        try resolver.checkDestination(host: server.parts.host, port: server.parts.port, shownAs: ValueReference.parse(spec.url)?.description)
        do {
            let connection = try await PostgresConnection.connect(configuration: server.configuration, id: 1, logger: logger)
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
            if psql.serverInfo?[.message] != nil {
                detail = Self.serverMessage(error)
            } else {
                detail = "\(psql.code)"
                if let underlying = psql.underlying { detail += ": \(underlying)" }
            }
        }
        if let password = (try? PostgresServer.resolve(spec, resolver: resolver))?.password, !password.isEmpty {
            detail = detail.replacingOccurrences(of: password, with: "***")
        }
        return SinkError(reason: "SinkUnavailable", message: "cannot \(what) at \(location): \(detail)")
    }

    private func quoted(_ identifier: String) -> String { PostgresText.quoted(identifier) }
}
