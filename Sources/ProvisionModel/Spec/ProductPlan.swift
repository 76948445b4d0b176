/// A product compiled against its dataset: the filter, the projection and the output schema.
/// Both apply-time validation and the running pipeline build it, so they cannot disagree.
public struct ProductPlan: Sendable {
    public let product: DataProduct
    public let dataset: Dataset
    public let filter: Expression?
    /// Nil means the events pass through whole.
    public let projection: [(name: String, expression: Expression)]?
    public let outputSchema: Schema
    /// The output field that identifies a record, if any.
    public let keyField: String?
    /// The top-level event fields the product reads; nothing else is decoded.
    public let slots: FieldSlots
    /// The slot of the dataset's event-time field; always the first slot.
    public let timeSlot: Int?
    /// Slots below this one are all the filter (and the event time) needs, so an event the
    /// filter rejects is never decoded further.
    public let filterSlotCount: Int
    /// The filter reads the event-time field itself (`placed_at >= 2026-06-18`), so the first
    /// scan must decode it even when no time window needs it.
    public let filterReadsTimeField: Bool
    /// Without `select`: the slot of each output field, in output order.
    public let passthroughSlots: [Int]?
    /// The joined datasets, in spec order; each fills a slot with the matched record.
    public let joins: [JoinPlan]

    /// A join compiled against both datasets.
    public struct JoinPlan: Sendable {
        public let spec: JoinSpec
        public let dataset: Dataset
        /// The slot the matched record's object fills; never read from the event.
        public let slot: Int
        /// The joined dataset's field matched against the event's `on` field: the table's
        /// key, or for a windowed join the field of the same name.
        public let matchedField: String
        /// The joined record's fields that expressions read, or nil for all of them: only
        /// these are kept in join state.
        public internal(set) var fieldsRead: [String]?
    }

    /// Where a compile error belongs in the product spec.
    public enum Failure: Error, Sendable {
        case unknownDataset(String)
        case expression(path: String, ExpressionError)
        case key(String)
        /// A join that does not fit its datasets; `path` is the join's field.
        case join(path: String, message: String)

        /// One line: the field path and what is wrong there.
        public var summary: String {
            switch self {
            case .unknownDataset(let name): return "spec.from: unknown dataset '\(name)'"
            case .expression(let path, let error): return "\(path): \(error.message)"
            case .key(let message): return "spec.key: \(message)"
            case .join(let path, let message): return "\(path): \(message)"
            }
        }
    }

    public static func compile(_ product: DataProduct, datasets: [String: Dataset]) throws(Failure) -> ProductPlan {
        guard let dataset = datasets[product.spec.from] else { throw .unknownDataset(product.spec.from) }
        var scope = ExpressionScope(datasetName: dataset.name, schema: dataset.spec.schema)
        var slots = FieldSlots()
        let timeSlot = dataset.spec.time.map { slots.slot(for: $0) }
        var joins: [JoinPlan] = []
        for (index, join) in product.spec.joins.enumerated() {
            if join.isWindowed, let earlier = product.spec.joins[..<index].firstIndex(where: \.isWindowed) {
                throw .join(path: "spec.join[\(index)].within",
                            message: "a product joins one stream in a window at most (spec.join[\(earlier)] is one already)")
            }
            let plan = try compileJoin(join, at: "spec.join[\(index)]", source: dataset, datasets: datasets, slots: &slots)
            scope.schema.fields.append(.init(name: join.alias, type: .object(plan.dataset.spec.schema)))
            joins.append(plan)
        }
        var filter: Expression?
        if let source = product.spec.filter {
            do {
                filter = try Expression.compile(source, in: scope, slots: &slots)
            } catch {
                throw .expression(path: "spec.where", error)
            }
            if let type = filter?.type, type != .boolean, type != .null {
                throw .expression(path: "spec.where", ExpressionError(column: 1, message: "where must be a boolean condition, found \(type.name)"))
            }
        }
        let filterSlotCount = slots.names.count
        let filterReadsTimeField = dataset.spec.time.map { slots.reads($0) } ?? false
        var projection: [(name: String, expression: Expression)]?
        var outputSchema = dataset.spec.schema
        // Without `select`, a joined event is its own fields plus one object per join.
        let select = product.spec.select ?? (joins.isEmpty ? nil : scope.schema.fields.map {
            SelectField(name: $0.name, expression: $0.name)
        })
        if let select {
            projection = []
            outputSchema = Schema()
            for field in select {
                let expression: Expression
                do {
                    expression = try Expression.compile(field.expression, in: scope, slots: &slots)
                } catch {
                    throw .expression(path: "spec.select.\(field.name)", error)
                }
                projection?.append((field.name, expression))
                let type: ValueType
                switch expression.type {
                case .null, .object: type = .json
                default: type = expression.type
                }
                // An output computed from personal data is personal data.
                outputSchema.fields.append(.init(name: field.name, type: type, pii: expression.readsPII))
            }
        }
        var keyField: String?
        if let key = product.spec.key {
            guard outputSchema.field(named: key) != nil else {
                var message = "key '\(key)' is not an output field"
                if let suggestion = closestMatch(to: key, among: outputSchema.fieldNames) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                throw .key(message)
            }
            keyField = key
        } else if let datasetKey = dataset.spec.key, outputSchema.field(named: datasetKey) != nil {
            keyField = datasetKey
        }
        for index in joins.indices {
            joins[index].fieldsRead = slots.fieldsRead(in: joins[index].spec.alias).map { $0.sorted() }
        }
        var passthroughSlots: [Int]?
        if projection == nil {
            passthroughSlots = outputSchema.fields.map { slots.slot(for: $0.name) }
        }
        return ProductPlan(product: product, dataset: dataset, filter: filter, projection: projection,
                           outputSchema: outputSchema, keyField: keyField, slots: slots,
                           timeSlot: timeSlot,
                           filterSlotCount: filterSlotCount, filterReadsTimeField: filterReadsTimeField,
                           passthroughSlots: passthroughSlots, joins: joins)
    }

    private static func compileJoin(_ join: JoinSpec, at path: String, source: Dataset, datasets: [String: Dataset],
                                    slots: inout FieldSlots) throws(Failure) -> JoinPlan
    {
        guard let joined = datasets[join.dataset] else {
            var message = "unknown dataset '\(join.dataset)'"
            if let suggestion = closestMatch(to: join.dataset, among: Array(datasets.keys)) {
                message += " (did you mean '\(suggestion)'?)"
            }
            throw .join(path: "\(path).dataset", message: message)
        }
        if joined.spec.isCompacted, join.isWindowed || join.mode == .asOf {
            // Compaction drops a key's earlier versions whenever the broker runs it: an answer
            // from history would change with it.
            throw .join(path: join.isWindowed ? "\(path).within" : "\(path).dataset",
                        message: "dataset '\(joined.name)' is compacted (only each key's latest record is kept), so it is joined by its current rows: mode: latest"
                            + (join.isWindowed ? ", not in a window" : ", not as of the event's time"))
        }
        guard let onField = source.spec.schema.field(named: join.on) else {
            var message = "unknown field '\(join.on)' in dataset '\(source.name)'"
            if let suggestion = closestMatch(to: join.on, among: source.spec.schema.fieldNames) {
                message += " (did you mean '\(suggestion)'?)"
            }
            throw .join(path: "\(path).on", message: message)
        }
        guard onField.type == .string || onField.type == .integer else {
            throw .join(path: "\(path).on", message: "'\(join.on)' is a \(onField.type.name); joins match on string or integer fields")
        }
        let matched: Schema.Field
        if join.isWindowed {
            guard let field = joined.spec.schema.field(named: join.on) else {
                throw .join(path: "\(path).on",
                            message: "dataset '\(joined.name)' has no field '\(join.on)' to match '\(source.name).\(join.on)' against")
            }
            matched = field
        } else {
            guard let key = joined.spec.key, let field = joined.spec.schema.field(named: key) else {
                throw .join(path: "\(path).dataset",
                            message: "dataset '\(joined.name)' has no key, so it cannot be joined as a table (a windowed join needs 'within')")
            }
            matched = field
        }
        guard matched.type == onField.type else {
            throw .join(path: "\(path).on", message: "'\(source.name).\(join.on)' is a \(onField.type.name) but '\(joined.name).\(matched.name)' is a \(matched.type.name); joined fields must have the same type")
        }
        if source.spec.schema.field(named: join.alias) != nil {
            throw .join(path: "\(path).as", message: "'\(join.alias)' is a field of dataset '\(source.name)'; name the join something else")
        }
        return JoinPlan(spec: join, dataset: joined, slot: slots.slot(for: join.alias), matchedField: matched.name, fieldsRead: nil)
    }
}

/// Checks a product against the datasets it reads and reports errors at the right node.
struct ProductValidator {
    let product: DataProduct
    let marks: [String: TextPosition]
    let file: String
    let datasets: [String: Dataset]

    func validate() -> [SpecError] {
        do {
            let plan = try ProductPlan.compile(product, datasets: datasets)
            switch product.spec.sink {
            case .postgres where plan.keyField == nil:
                return [located("spec.sink.postgres", "a table needs a primary key: set spec.key to an output field")]
            case .elasticsearch where plan.keyField == nil:
                return [located("spec.sink.elasticsearch", "documents need ids: set spec.key to an output field")]
            case .elasticsearch(let elasticsearch):
                for name in elasticsearch.text where plan.outputSchema.field(named: name)?.type != .string {
                    let problem = plan.outputSchema.field(named: name) == nil ? "is not an output field" : "is not a string"
                    return [located("spec.sink.elasticsearch.text", "'\(name)' \(problem); only string fields can be full text")]
                }
                return []
            default:
                return []
            }
        } catch {
            switch error {
            case .unknownDataset(let name):
                var message = "unknown dataset '\(name)'"
                if let suggestion = closestMatch(to: name, among: Array(datasets.keys)) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                return [located("spec.from", message)]
            case .expression(let path, let expressionError):
                let mark = marks[path] ?? TextPosition(line: 1, column: 1)
                let quoteOffset = marks["style:" + path]?.column ?? 0
                return [SpecError(file: file, line: mark.line, column: mark.column + quoteOffset + expressionError.column - 1,
                                  path: path, message: expressionError.message)]
            case .key(let message):
                return [located("spec.key", message)]
            case .join(let path, let message):
                return [located(path, message)]
            }
        }
    }

    private func located(_ path: String, _ message: String) -> SpecError {
        let mark = marks[path] ?? TextPosition(line: 1, column: 1)
        return SpecError(file: file, line: mark.line, column: mark.column, path: path, message: message)
    }
}
