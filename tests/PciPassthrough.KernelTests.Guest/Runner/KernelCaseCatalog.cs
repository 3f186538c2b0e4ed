using System.Reflection;
using System.Text.RegularExpressions;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>One discovered case.</summary>
public sealed record KernelCaseInfo(string Name, int Order, bool NeedsDaemon, string Description, MethodInfo Method);

/// <summary>
/// Every <see cref="KernelCaseAttribute"/> method of this assembly, in the fixed order the agent
/// runs them. The host test project enumerates the same list, so a case added here is a test
/// there without any other change.
/// </summary>
public static partial class KernelCaseCatalog
{
    private static readonly Lazy<IReadOnlyList<KernelCaseInfo>> Cases = new(Discover);

    public static IReadOnlyList<KernelCaseInfo> All => Cases.Value;

    [GeneratedRegex("^[a-z][a-z0-9_]*$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    private static List<KernelCaseInfo> Discover()
    {
        var cases = new List<(KernelCaseInfo Case, string Type, int Token)>();
        foreach (var type in typeof(KernelCaseCatalog).Assembly.GetTypes())
        {
            foreach (var method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            {
                if (method.GetCustomAttribute<KernelCaseAttribute>() is not { } attribute)
                {
                    continue;
                }

                if (method.ReturnType != typeof(Task) || method.GetParameters().Length != 0 ||
                    type.GetConstructor([typeof(CaseContext)]) is null)
                {
                    throw new InvalidOperationException(
                        $"{type.Name}.{method.Name}: a kernel case is a public Task method without parameters on a class constructed from a CaseContext");
                }

                if (!NamePattern().IsMatch(attribute.Name))
                {
                    throw new InvalidOperationException($"{type.Name}.{method.Name}: case name '{attribute.Name}' is not snake_case");
                }

                cases.Add((new KernelCaseInfo(attribute.Name, attribute.Order, attribute.NeedsDaemon, attribute.Description, method),
                    type.FullName ?? type.Name, method.MetadataToken));
            }
        }

        var duplicate = cases.GroupBy(c => c.Case.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new InvalidOperationException($"Two kernel cases are named '{duplicate.Key}'");
        }

        return cases
            .OrderBy(c => c.Case.Order)
            .ThenBy(c => c.Type, StringComparer.Ordinal)
            .ThenBy(c => c.Token)
            .Select(c => c.Case)
            .ToList();
    }
}
