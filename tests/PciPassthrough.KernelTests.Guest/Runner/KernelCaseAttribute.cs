namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>
/// Marks a method as one case of the real-kernel suite. The method is a public instance method
/// returning <see cref="Task"/> with no parameters, on a class whose constructor takes a
/// <see cref="CaseContext"/>; a new instance is made for each case. The host test project
/// reports each case as its own test, under <see cref="Name"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public sealed class KernelCaseAttribute(string name) : Attribute
{
    /// <summary>The case's name in cases.json and in the host's test list (snake_case, unique).</summary>
    public string Name { get; } = name;

    /// <summary>Cases run by ascending order, then by class name, then in declaration order.</summary>
    public int Order { get; set; } = 1000;

    /// <summary>Whether the daemon must be up and ready before the case starts.</summary>
    public bool NeedsDaemon { get; set; } = true;

    /// <summary>What the case checks, one sentence (shown by <c>--list</c>).</summary>
    public string Description { get; set; } = "";
}
