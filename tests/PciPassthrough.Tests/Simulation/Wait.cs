namespace PciPassthrough.Simulation.Tests;

/// <summary>
/// Waits for something that happens on another thread. The limit only guards against a hang: a
/// test never asserts how long anything took.
/// </summary>
internal static class Wait
{
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    public static async Task UntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Guard;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Gave up waiting for {what}");
            }

            await Task.Delay(10);
        }
    }

    public static void Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Guard;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Gave up waiting for {what}");
            }

            Thread.Sleep(10);
        }
    }
}
