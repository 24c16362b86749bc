// Recursive-descent parser from tokens to template nodes, with Jinja's grammar and operator precedence
// (Jinja2 3.1 parser.py: condexpr < or < and < not < compare < +,- < ~ < *,/,//,% < ** < unary < postfix/filters/tests).
// Unknown filters and tests are syntax errors, except inside `if` blocks and conditional expressions where, as in Jinja 3,
// they fail only if evaluated. A colon may end a block statement's head (`{% if x: %}`), as Jinja allows.
using System.Collections.Frozen;
using System.Runtime.CompilerServices;

namespace Pregate.Engine.ChatTemplates;

internal sealed class TemplateParser
{
    /// <summary>Deepest nesting of blocks and parenthesised expressions accepted (keeps parsing and evaluation off the stack limit).</summary>
    public const int MaxNesting = 100;

    private static readonly FrozenSet<string> UnsupportedTags = FrozenSet.ToFrozenSet(
        ["include", "import", "from", "extends", "block", "endblock", "call", "endcall", "do", "autoescape", "endautoescape"], StringComparer.Ordinal);

    private readonly List<Token> tokens;
    private readonly SourceMap map;
    private int index;
    private int depth;
    private int loopDepth;
    private int softDepth;

    private TemplateParser(List<Token> tokens, SourceMap map)
    {
        this.tokens = tokens;
        this.map = map;
    }

    public static List<Stmt> Parse(string source)
    {
        var (tokens, map) = TemplateLexer.Tokenize(source);
        var parser = new TemplateParser(tokens, map);
        return parser.ParseBody([], null, out _);
    }

    private Token Current => tokens[index];
    private Token Peek(int ahead = 1) => tokens[Math.Min(index + ahead, tokens.Count - 1)];

    private ChatTemplateException Error(Token at, string message)
    {
        var (line, column) = map.Locate(at.Position);
        return new ChatTemplateException(ChatTemplateErrorKind.Syntax, message, line, column);
    }

    private (int Line, int Column) Where(Token token) => map.Locate(token.Position);

    private static string Describe(Token token) => token.Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.String => "a string",
        _ => $"'{token.Text}'",
    };

    private bool IsOperator(string op) => Current.Kind == TokenKind.Operator && Current.Text == op;
    private bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Text == name;

    private bool SkipOperator(string op)
    {
        if (!IsOperator(op)) return false;
        index++;
        return true;
    }

    private bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        index++;
        return true;
    }

    private void ExpectOperator(string op)
    {
        if (!SkipOperator(op)) throw Error(Current, $"expected '{op}', found {Describe(Current)}");
    }

    private Token ExpectName(string what)
    {
        if (Current.Kind != TokenKind.Name) throw Error(Current, $"expected {what}, found {Describe(Current)}");
        return tokens[index++];
    }

    /// <summary>The end of a block statement's head: an optional colon, then '%}' (Jinja parse_statements).</summary>
    private void ExpectBodyStart()
    {
        SkipOperator(":");
        ExpectBlockEnd();
    }

    private void ExpectBlockEnd()
    {
        if (Current.Kind != TokenKind.BlockEnd) throw Error(Current, $"expected end of tag '%}}', found {Describe(Current)}");
        index++;
    }

    private void Enter(Token at)
    {
        if (++depth > MaxNesting || !RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw Error(at, $"template nested deeper than {MaxNesting} levels");
    }

    private void Leave() => depth--;

    // ---------------------------------------------------------------- statements

    private List<Stmt> ParseBody(string[] endTags, Token? opener, out string endTag)
    {
        var body = new List<Stmt>();
        while (true)
        {
            Token token = Current;
            var (line, column) = Where(token);
            switch (token.Kind)
            {
                case TokenKind.Text:
                    index++;
                    body.Add(new TextStmt(line, column, token.Text));
                    break;
                case TokenKind.VariableBegin:
                {
                    index++;
                    Expr value = ParseTuple(withConditional: true);
                    if (Current.Kind != TokenKind.VariableEnd) throw Error(Current, $"expected end of expression '}}}}', found {Describe(Current)}");
                    index++;
                    body.Add(new OutputStmt(line, column, value));
                    break;
                }
                case TokenKind.BlockBegin:
                {
                    Token name = Peek();
                    if (name.Kind != TokenKind.Name) throw Error(name, $"expected a tag name, found {Describe(name)}");
                    if (endTags.Contains(name.Text))
                    {
                        index += 2;
                        endTag = name.Text;
                        return body;
                    }
                    index += 2;
                    body.Add(ParseStatement(name, token, endTags));
                    break;
                }
                case TokenKind.End:
                    if (endTags.Length == 0)
                    {
                        endTag = "";
                        return body;
                    }
                    throw Error(opener!.Value, $"unexpected end of template: '{{% {opener.Value.Text} %}}' is never closed (expected '{endTags[^1]}')");
                default:
                    throw Error(token, $"unexpected {Describe(token)}");
            }
        }
    }

    private Stmt ParseStatement(Token name, Token tagStart, string[] openEndTags)
    {
        Enter(name);
        try
        {
            var (line, column) = Where(tagStart);
            switch (name.Text)
            {
                case "if": return ParseIf(line, column, name);
                case "for": return ParseFor(line, column, name);
                case "set": return ParseSet(line, column, name);
                case "macro": return ParseMacro(line, column, name);
                case "with": return ParseWith(line, column, name);
                case "filter":
                {
                    List<FilterCall> filters = ParseFilterChain(requireOne: true);
                    ExpectBodyStart();
                    List<Stmt> body = ParseBody(["endfilter"], name, out _);
                    ExpectBlockEnd();
                    return new FilterBlockStmt(line, column, filters, body);
                }
                case "generation":
                {
                    ExpectBodyStart();
                    List<Stmt> body = ParseBody(["endgeneration"], name, out _);
                    ExpectBlockEnd();
                    return new ScopedBlockStmt(line, column, [], body);
                }
                case "break" or "continue":
                    if (loopDepth == 0) throw Error(name, $"'{name.Text}' outside of a for loop");
                    ExpectBlockEnd();
                    return new LoopControlStmt(line, column, name.Text == "break" ? Flow.Break : Flow.Continue);
                default:
                    if (UnsupportedTags.Contains(name.Text)) throw Error(name, $"the '{name.Text}' tag is not supported in chat templates");
                    if (name.Text.StartsWith("end", StringComparison.Ordinal) || name.Text is "elif" or "else")
                        throw Error(name, openEndTags.Length == 0
                            ? $"unexpected '{name.Text}': no block is open"
                            : $"unexpected '{name.Text}', expected '{string.Join("' or '", openEndTags)}'");
                    throw Error(name, $"unknown tag '{name.Text}'");
            }
        }
        finally
        {
            Leave();
        }
    }

    private Stmt ParseIf(int line, int column, Token opener)
    {
        var branches = new List<KeyValuePair<Expr, List<Stmt>>>();
        List<Stmt> otherwise = [];
        softDepth++;
        Expr condition = ParseTuple(withConditional: true);
        while (true)
        {
            ExpectBodyStart();
            List<Stmt> body = ParseBody(["elif", "else", "endif"], opener, out string end);
            branches.Add(new(condition, body));
            if (end == "elif")
            {
                condition = ParseTuple(withConditional: true);
                continue;
            }
            if (end == "else")
            {
                ExpectBodyStart();
                otherwise = ParseBody(["endif"], opener, out _);
            }
            ExpectBlockEnd();
            softDepth--;
            return new IfStmt(line, column, branches, otherwise);
        }
    }

    private Stmt ParseFor(int line, int column, Token opener)
    {
        Target target = ParseAssignTarget(withNamespace: false);
        if (!SkipName("in")) throw Error(Current, $"expected 'in' in for loop, found {Describe(Current)}");
        Expr iterable = ParseTuple(withConditional: false);
        Expr? filter = SkipName("if") ? ParseTuple(withConditional: true) : null;
        if (IsName("recursive")) throw Error(Current, "recursive for loops are not supported in chat templates");
        ExpectBodyStart();
        loopDepth++;
        List<Stmt> body = ParseBody(["else", "endfor"], opener, out string end);
        loopDepth--;
        List<Stmt> otherwise = [];
        if (end == "else")
        {
            ExpectBodyStart();
            otherwise = ParseBody(["endfor"], opener, out _);
        }
        ExpectBlockEnd();
        return new ForStmt(line, column, target, iterable, filter, body, otherwise);
    }

    private Stmt ParseSet(int line, int column, Token opener)
    {
        Target target = ParseAssignTarget(withNamespace: true);
        if (SkipOperator("="))
        {
            Expr value = ParseTuple(withConditional: true);
            ExpectBlockEnd();
            return new SetStmt(line, column, target, value);
        }
        if (target is TupleTarget) throw Error(Current, "a block set assigns a single name");
        List<FilterCall> filters = ParseFilterChain(requireOne: false);
        ExpectBodyStart();
        List<Stmt> body = ParseBody(["endset"], opener, out _);
        ExpectBlockEnd();
        return new SetBlockStmt(line, column, target, filters, body);
    }

    private Stmt ParseMacro(int line, int column, Token opener)
    {
        string name = ExpectName("a macro name").Text;
        ExpectOperator("(");
        var parameters = new List<KeyValuePair<string, Expr?>>();
        while (!IsOperator(")"))
        {
            if (parameters.Count > 0) ExpectOperator(",");
            if (IsOperator(")")) break;
            Token parameter = ExpectName("a parameter name");
            if (parameters.Any(p => p.Key == parameter.Text)) throw Error(parameter, $"duplicate parameter '{parameter.Text}'");
            Expr? fallback = SkipOperator("=") ? ParseExpression(withConditional: true) : null;
            if (fallback is null && parameters.Any(p => p.Value is not null))
                throw Error(parameter, "non-default parameter follows default parameter");
            parameters.Add(new(parameter.Text, fallback));
        }
        ExpectOperator(")");
        ExpectBodyStart();
        int outerLoops = loopDepth;
        loopDepth = 0;
        List<Stmt> body = ParseBody(["endmacro"], opener, out _);
        loopDepth = outerLoops;
        ExpectBlockEnd();
        return new MacroStmt(line, column, name, parameters, body);
    }

    private Stmt ParseWith(int line, int column, Token opener)
    {
        var assignments = new List<KeyValuePair<Target, Expr>>();
        while (Current.Kind != TokenKind.BlockEnd && !IsOperator(":"))
        {
            if (assignments.Count > 0) ExpectOperator(",");
            Target target = ParseAssignTarget(withNamespace: false);
            ExpectOperator("=");
            assignments.Add(new(target, ParseExpression(withConditional: true)));
        }
        ExpectBodyStart();
        List<Stmt> body = ParseBody(["endwith"], opener, out _);
        ExpectBlockEnd();
        return new ScopedBlockStmt(line, column, assignments, body);
    }

    /// <summary>A name, `ns.attr` (set only), or a tuple of names for unpacking: `a, b` or `(a, b)`.</summary>
    private Target ParseAssignTarget(bool withNamespace)
    {
        Token first = Current;
        var (line, column) = Where(first);
        if (withNamespace && first.Kind == TokenKind.Name && Peek().Kind == TokenKind.Operator && Peek().Text == ".")
        {
            index += 2;
            return new NamespaceTarget(line, column, first.Text, ExpectName("an attribute name").Text);
        }
        var items = new List<Target>();
        bool parenthesised = SkipOperator("(");
        do
        {
            if (parenthesised && IsOperator(")")) break;
            if (IsOperator("("))
            {
                Enter(Current);
                items.Add(ParseAssignTarget(withNamespace: false));
                Leave();
            }
            else
            {
                Token name = ExpectName("a variable name");
                if (name.Text is "true" or "false" or "none" or "True" or "False" or "None")
                    throw Error(name, $"cannot assign to '{name.Text}'");
                var (l, c) = Where(name);
                items.Add(new NameTarget(l, c, name.Text));
            }
        }
        while (SkipOperator(","));
        if (parenthesised) ExpectOperator(")");
        return items.Count == 1 && !parenthesised ? items[0] : new TupleTarget(line, column, items);
    }

    // ---------------------------------------------------------------- expressions

    private bool IsTupleEnd() =>
        Current.Kind is TokenKind.BlockEnd or TokenKind.VariableEnd or TokenKind.End || IsOperator(")");

    /// <summary>Jinja's parse_tuple: `a, b` is a tuple, a lone expression is itself.</summary>
    private Expr ParseTuple(bool withConditional, bool explicitParentheses = false)
    {
        Token start = Current;
        var (line, column) = Where(start);
        var items = new List<Expr>();
        bool isTuple = false;
        while (true)
        {
            if (items.Count > 0) ExpectOperator(",");
            if (IsTupleEnd()) break;
            items.Add(ParseExpression(withConditional));
            if (IsOperator(",")) isTuple = true;
            else break;
        }
        if (!isTuple)
        {
            if (items.Count > 0) return items[0];
            if (!explicitParentheses) throw Error(Current, $"expected an expression, found {Describe(Current)}");
        }
        return new ListExpr(line, column, items, tuple: true);
    }

    private Expr ParseExpression(bool withConditional) => withConditional ? ParseConditional() : ParseOr();

    private Expr ParseConditional()
    {
        Expr expr = ParseOr();
        while (IsName("if"))
        {
            var (line, column) = Where(Current);
            index++;
            softDepth++;
            Expr condition = ParseOr();
            Expr? otherwise = SkipName("else") ? ParseConditional() : null;
            softDepth--;
            expr = new ConditionalExpr(line, column, condition, expr, otherwise);
        }
        return expr;
    }

    private Expr ParseOr()
    {
        Expr left = ParseAnd();
        while (IsName("or"))
        {
            var (line, column) = Where(Current);
            index++;
            left = new LogicalExpr(line, column, isAnd: false, left, ParseAnd());
        }
        return left;
    }

    private Expr ParseAnd()
    {
        Expr left = ParseNot();
        while (IsName("and"))
        {
            var (line, column) = Where(Current);
            index++;
            left = new LogicalExpr(line, column, isAnd: true, left, ParseNot());
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (!IsName("not")) return ParseCompare();
        var (line, column) = Where(Current);
        Enter(Current);
        index++;
        Expr operand = ParseNot();
        Leave();
        return new UnaryExpr(line, column, UnaryOperator.Not, operand);
    }

    private Expr ParseCompare()
    {
        var (line, column) = Where(Current);
        Expr first = ParseMath1();
        var rest = new List<KeyValuePair<string, Expr>>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && Current.Text is "==" or "!=" or "<" or "<=" or ">" or ">=")
            {
                string op = tokens[index++].Text;
                rest.Add(new(op, ParseMath1()));
            }
            else if (SkipName("in"))
            {
                rest.Add(new("in", ParseMath1()));
            }
            else if (IsName("not") && Peek().Kind == TokenKind.Name && Peek().Text == "in")
            {
                index += 2;
                rest.Add(new("not in", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(line, column, first, rest);
    }

    private Expr ParseMath1()
    {
        Expr left = ParseConcat();
        while (Current.Kind == TokenKind.Operator && Current.Text is "+" or "-")
        {
            var (line, column) = Where(Current);
            string op = tokens[index++].Text;
            left = new BinaryExpr(line, column, op, left, ParseConcat());
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var (line, column) = Where(Current);
        var parts = new List<Expr> { ParseMath2() };
        while (SkipOperator("~")) parts.Add(ParseMath2());
        return parts.Count == 1 ? parts[0] : new ConcatExpr(line, column, parts);
    }

    private Expr ParseMath2()
    {
        Expr left = ParsePow();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            var (line, column) = Where(Current);
            string op = tokens[index++].Text;
            left = new BinaryExpr(line, column, op, left, ParsePow());
        }
        return left;
    }

    private Expr ParsePow()
    {
        Expr left = ParseUnary(withFilter: true);
        while (IsOperator("**"))
        {
            var (line, column) = Where(Current);
            index++;
            left = new BinaryExpr(line, column, "**", left, ParseUnary(withFilter: true));
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Token start = Current;
        var (line, column) = Where(start);
        Enter(start);
        try
        {
            Expr node;
            if (SkipOperator("-")) node = new UnaryExpr(line, column, UnaryOperator.Negate, ParseUnary(withFilter: false));
            else if (SkipOperator("+")) node = new UnaryExpr(line, column, UnaryOperator.Plus, ParseUnary(withFilter: false));
            else node = ParsePrimary();
            node = ParsePostfix(node);
            return withFilter ? ParseFilterAndTests(node) : node;
        }
        finally
        {
            Leave();
        }
    }

    private Expr ParsePrimary()
    {
        Token token = Current;
        var (line, column) = Where(token);
        switch (token.Kind)
        {
            case TokenKind.Name:
                index++;
                return token.Text switch
                {
                    "true" or "True" => new ConstantExpr(line, column, true),
                    "false" or "False" => new ConstantExpr(line, column, false),
                    "none" or "None" => new ConstantExpr(line, column, null),
                    _ => new NameExpr(line, column, token.Text),
                };
            case TokenKind.String:
            {
                var text = new System.Text.StringBuilder();
                while (Current.Kind == TokenKind.String) text.Append(tokens[index++].Text);
                return new ConstantExpr(line, column, text.ToString());
            }
            case TokenKind.Integer:
            case TokenKind.Float:
                index++;
                return new ConstantExpr(line, column, token.Value);
            case TokenKind.Operator when token.Text == "(":
            {
                index++;
                Expr inner = ParseTuple(withConditional: true, explicitParentheses: true);
                ExpectOperator(")");
                return inner;
            }
            case TokenKind.Operator when token.Text == "[":
            {
                index++;
                var items = new List<Expr>();
                while (!IsOperator("]"))
                {
                    if (items.Count > 0) ExpectOperator(",");
                    if (IsOperator("]")) break;
                    items.Add(ParseExpression(withConditional: true));
                }
                ExpectOperator("]");
                return new ListExpr(line, column, items, tuple: false);
            }
            case TokenKind.Operator when token.Text == "{":
            {
                index++;
                var pairs = new List<KeyValuePair<Expr, Expr>>();
                while (!IsOperator("}"))
                {
                    if (pairs.Count > 0) ExpectOperator(",");
                    if (IsOperator("}")) break;
                    Expr key = ParseExpression(withConditional: true);
                    ExpectOperator(":");
                    pairs.Add(new(key, ParseExpression(withConditional: true)));
                }
                ExpectOperator("}");
                return new DictExpr(line, column, pairs);
            }
            default:
                throw Error(token, $"unexpected {Describe(token)}");
        }
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            Token token = Current;
            var (line, column) = Where(token);
            if (SkipOperator("."))
            {
                Token member = Current;
                if (member.Kind == TokenKind.Name) node = new AttributeExpr(line, column, node, member.Text);
                else if (member.Kind == TokenKind.Integer) node = new ItemExpr(line, column, node, new ConstantExpr(line, column, member.Value));
                else throw Error(member, $"expected an attribute name after '.', found {Describe(member)}");
                index++;
            }
            else if (SkipOperator("["))
            {
                node = ParseSubscript(node, line, column);
            }
            else if (IsOperator("("))
            {
                node = new CallExpr(line, column, node, ParseCallArguments());
            }
            else return node;
        }
    }

    private Expr ParseSubscript(Expr target, int line, int column)
    {
        Enter(Current);
        try
        {
            Expr? start = null, stop = null, step = null;
            bool slice = false;
            if (!IsOperator(":")) start = ParseExpression(withConditional: true);
            if (SkipOperator(":"))
            {
                slice = true;
                if (!IsOperator("]") && !IsOperator(":")) stop = ParseExpression(withConditional: true);
                if (SkipOperator(":") && !IsOperator("]")) step = ParseExpression(withConditional: true);
            }
            ExpectOperator("]");
            return slice ? new SliceExpr(line, column, target, start, stop, step) : new ItemExpr(line, column, target, start!);
        }
        finally
        {
            Leave();
        }
    }

    private ArgumentList ParseCallArguments()
    {
        ExpectOperator("(");
        Enter(Current);
        var positional = new List<Expr>();
        var named = new List<KeyValuePair<string, Expr>>();
        while (!IsOperator(")"))
        {
            if (positional.Count + named.Count > 0) ExpectOperator(",");
            if (IsOperator(")")) break;
            if (IsOperator("*") || IsOperator("**")) throw Error(Current, "*args and **kwargs are not supported in chat templates");
            if (Current.Kind == TokenKind.Name && Peek().Kind == TokenKind.Operator && Peek().Text == "=")
            {
                Token name = tokens[index];
                index += 2;
                if (named.Any(n => n.Key == name.Text)) throw Error(name, $"keyword argument '{name.Text}' repeated");
                named.Add(new(name.Text, ParseExpression(withConditional: true)));
            }
            else
            {
                if (named.Count > 0) throw Error(Current, "positional argument follows keyword argument");
                positional.Add(ParseExpression(withConditional: true));
            }
        }
        ExpectOperator(")");
        Leave();
        return new ArgumentList(positional, named);
    }

    private Expr ParseFilterAndTests(Expr node)
    {
        while (true)
        {
            Token token = Current;
            var (line, column) = Where(token);
            if (IsOperator("|"))
            {
                node = new FilterExpr(line, column, node, ParseFilter());
            }
            else if (IsName("is"))
            {
                index++;
                bool negated = SkipName("not");
                Token name = ExpectName("a test name");
                string testName = name.Text;
                while (SkipOperator(".")) testName += "." + ExpectName("a test name").Text;
                if (!TemplateTests.TryGet(testName, out TemplateTest test))
                {
                    if (softDepth == 0) throw Error(name, $"no test named '{testName}'");
                    test = (_, _, _) => throw TemplateFault.Runtime($"no test named '{testName}'");
                }
                ArgumentList arguments = ArgumentList.Empty;
                if (IsOperator("(")) arguments = ParseCallArguments();
                else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                          || IsOperator("[") || IsOperator("{"))
                         && !(IsName("else") || IsName("or") || IsName("and") || IsName("if") || IsName("in") || IsName("not") || IsName("is")))
                {
                    arguments = new ArgumentList([ParsePostfix(ParsePrimary())], []);
                }
                node = new TestExpr(line, column, node, test, arguments, negated);
            }
            else if (IsOperator("("))
            {
                node = new CallExpr(line, column, node, ParseCallArguments());
            }
            else return node;
        }
    }

    private FilterCall ParseFilter()
    {
        ExpectOperator("|");
        Token name = ExpectName("a filter name");
        string filterName = name.Text;
        while (SkipOperator(".")) filterName += "." + ExpectName("a filter name").Text;
        ArgumentList arguments = IsOperator("(") ? ParseCallArguments() : ArgumentList.Empty;
        var (line, column) = Where(name);
        return new FilterCall(line, column, filterName, ResolveFilter(name, filterName), arguments);
    }

    /// <summary>An unknown filter is a syntax error, or inside a soft block (if, conditional expression) a runtime error when used.</summary>
    private TemplateFilter ResolveFilter(Token at, string filterName)
    {
        if (TemplateFilters.TryGet(filterName, out TemplateFilter filter)) return filter;
        if (softDepth == 0) throw Error(at, $"no filter named '{filterName}'");
        return (_, _, _) => throw TemplateFault.Runtime($"no filter named '{filterName}'");
    }

    private List<FilterCall> ParseFilterChain(bool requireOne)
    {
        var filters = new List<FilterCall>();
        if (requireOne)
        {
            Token name = Current;
            if (name.Kind != TokenKind.Name) throw Error(name, $"expected a filter name, found {Describe(name)}");
            TemplateFilter filter = ResolveFilter(name, name.Text);
            index++;
            ArgumentList arguments = IsOperator("(") ? ParseCallArguments() : ArgumentList.Empty;
            var (line, column) = Where(name);
            filters.Add(new FilterCall(line, column, name.Text, filter, arguments));
        }
        while (IsOperator("|")) filters.Add(ParseFilter());
        return filters;
    }
}
