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
    /// Without `select`: the slot of each output field, in output order.
    public let passthroughSlots: [Int]?

    /// Where a compile error belongs in the product spec.
    public enum Failure: Error, Sendable {
        case unknownDataset(String)
        case expression(path: String, ExpressionError)
        case key(String)

        /// One line: the field path and what is wrong there.
        public var summary: String {
            switch self {
            case .unknownDataset(let name): return "spec.from: unknown dataset '\(name)'"
            case .expression(let path, let error): return "\(path): \(error.message)"
            case .key(let message): return "spec.key: \(message)"
            }
        }
    }

    public static func compile(_ product: DataProduct, datasets: [String: Dataset]) throws(Failure) -> ProductPlan {
        guard let dataset = datasets[product.spec.from] else { throw .unknownDataset(product.spec.from) }
        let scope = ExpressionScope(datasetName: dataset.name, schema: dataset.spec.schema)
        var slots = FieldSlots()
        let timeSlot = dataset.spec.time.map { slots.slot(for: $0) }
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
        var projection: [(name: String, expression: Expression)]?
        var outputSchema = dataset.spec.schema
        if let select = product.spec.select {
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
                outputSchema.fields.append(.init(name: field.name, type: expression.type == .null ? .json : expression.type))
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
        var passthroughSlots: [Int]?
        if projection == nil {
            passthroughSlots = outputSchema.fields.map { slots.slot(for: $0.name) }
        }
        return ProductPlan(product: product, dataset: dataset, filter: filter, projection: projection,
                           outputSchema: outputSchema, keyField: keyField, slots: slots,
                           timeSlot: timeSlot,
                           filterSlotCount: filterSlotCount, passthroughSlots: passthroughSlots)
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
            }
        }
    }

    private func located(_ path: String, _ message: String) -> SpecError {
        let mark = marks[path] ?? TextPosition(line: 1, column: 1)
        return SpecError(file: file, line: mark.line, column: mark.column, path: path, message: message)
    }
}
