using PciPassthrough.KernelTests.Guest.Runner;

// The real-kernel suite's agent: runs in the QEMU guest (started by run-guest.sh), drives the real
// daemon against the guest's kernel and writes $PCIPT_RESULTS/cases.json. Exit status 0 when
// every case passed and the kernel ended as it booted, 1 otherwise, 2 on bad arguments.
var options = AgentOptions.Parse(args, Console.Error);
if (options is null)
{
    return 2;
}

if (options.ListOnly)
{
    foreach (var info in KernelCaseCatalog.All)
    {
        Console.WriteLine($"{info.Name}\t{info.Description}");
    }

    return 0;
}

return await new CaseRunner(options).RunAsync();
